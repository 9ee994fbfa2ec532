#!/usr/bin/env node
import { main } from '../dist/cli/index.js';

const code = await main(process.argv.slice(2));
process.exitCode = code;
// A command is done when main returns; whatever handle a failed start left open must not keep the process up.
setTimeout(() => process.exit(code), 2000).unref();
