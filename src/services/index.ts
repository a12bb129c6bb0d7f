/**
 * Services: echo and relay.
 *
 * @module
 */
export * from './echo.ts'
export * from './relay.ts'
