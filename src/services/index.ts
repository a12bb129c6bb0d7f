/**
 * Services: echo, relay and verifier.
 *
 * @module
 */
export * from './echo.ts'
export * from './relay.ts'
export * from './verifier.ts'
