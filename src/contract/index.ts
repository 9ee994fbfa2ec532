/**
 * The contract: the bottom layer every other folder may import and that
 * imports nothing of Cella's. The API's shapes and operations, error codes
 * and their statuses, ARNs, fixed names, states and hook paths.
 */
export * from './arn.js';
export * from './connector-schemas.js';
export * from './errors.js';
export * from './errors-doc.js';
export * from './hooks.js';
export * from './image-schemas.js';
export * from './microvm-schemas.js';
export * from './names.js';
export * from './routes.js';
export * from './schemas.js';
export * from './states.js';
export * from './tags.js';
