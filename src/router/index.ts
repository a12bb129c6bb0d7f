/**
 * The router: addresses, routes, the message envelope, and the Node runtime.
 *
 * @module
 */
export * from './address.ts'
export * from './route.ts'
export * from './message.ts'
export * from './codec.ts'
export * from './access.ts'
export * from './logger.ts'
export * from './constants.ts'
export * from './node.ts'
