/**
 * throughline: end-to-end encrypted, mutually authenticated and remotely attested channels
 * across any number of transport hops.
 *
 * The root export re-exports the router, transports and services; subpaths
 * (`throughline/router`, `throughline/transports`, `throughline/services`) import one layer.
 *
 * @module
 */
export * from './errors.ts'
export * from './router/index.ts'
export * from './transports/index.ts'
export * from './services/index.ts'
export * from './channel/index.ts'
