/**
 * throughline's own TPM 2.0 client: transports (swtpm unix/TCP sockets, `/dev/tpmrm0`),
 * marshalling, response-code decoding, templates, TPMS_ATTEST parsing and {@link TpmClient}.
 *
 * @module
 */
export * from './constants.ts'
export * from './marshal.ts'
export * from './rc.ts'
export * from './transport.ts'
export * from './templates.ts'
export * from './attest.ts'
export * from './client.ts'
