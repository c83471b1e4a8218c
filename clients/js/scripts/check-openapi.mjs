// Checks the client's wire types against sessiond's OpenAPI document: generates TypeScript
// types from crates/server/openapi.json with openapi-typescript into .openapi/ (ignored by
// git), then type-checks test/openapi.check.ts, which fails to compile on any disagreement.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = join(dirname(fileURLToPath(import.meta.url)), '..');
const DOCUMENT = process.env.SESSIOND_OPENAPI || join(HERE, '../../crates/server/openapi.json');

if (!existsSync(DOCUMENT)) {
  console.log(`check-openapi: ${DOCUMENT} does not exist; nothing to check against`);
  process.exit(0);
}
const run = (script, args) => execFileSync(process.execPath, [join(HERE, 'node_modules', script), ...args], { stdio: 'inherit', cwd: HERE });
run('openapi-typescript/bin/cli.js', [DOCUMENT, '-o', join(HERE, '.openapi/schema.d.ts')]);
run('typescript/bin/tsc', ['-p', join(HERE, 'tsconfig.openapi.json')]);
console.log(`check-openapi: the client's types agree with ${DOCUMENT}`);
