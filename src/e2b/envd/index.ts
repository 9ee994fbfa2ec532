export { createEnvdHandler, sandboxNotFound, type EnvdHandler } from './handler.js';
export { DEFAULT_USER, type EnvdRequest, type EnvdResponse, type EnvdAgent, type EnvdSandboxes, type SandboxDefaults } from './context.js';
export { ENVD_PORT, ENVD_VERSION, envdAuthProblem, fileSignature, type EnvdAccess } from './access.js';
export { commandEnvironment } from './process.js';
