/**
 * The HTTP API: the contract's routes, validated with their TypeBox
 * schemas, parsed into a typed command and handed to its operation.
 * ./transport.ts is the HTTP side; one file of operations per resource
 * (microvms, images, connectors, tags, account) calls the domain; ./views.ts
 * shapes the answers; ./cursor.ts is every List's cursor.
 */
export type { ApiContext } from './command.js';
export { answerProtocolErrors } from './protocol.js';
export { createApi } from './transport.js';
