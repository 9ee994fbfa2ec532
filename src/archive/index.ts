/**
 * Code archives for image builds: extracting an untrusted zip safely, zipping a
 * local folder reproducibly, and fetching an artifact by `file://` or `s3://` URI.
 */
export { DEFAULT_ZIP_LIMITS, extractZip, findDockerfile, zipEntryCount, type ZipLimits } from './extract.js';
export { DEFAULT_MAX_ARTIFACT_BYTES, fetchArtifact, validateArtifactUri, type S3Settings } from './fetch.js';
export { zipDirectory } from './pack.js';
