// Builds the package: dist/ (ES modules and .d.ts declarations, by tsc) and the one-file bundle
// the sessiond web UI serves (crates/server/ui/sessiond-client.js, minified by esbuild). Prints
// the bundle's gzipped size and fails above the budget.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const HERE = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUNDLE = join(HERE, '../../crates/server/ui/sessiond-client.js');
const BUDGET = 8 * 1024;
const { name, version } = JSON.parse(readFileSync(join(HERE, 'package.json'), 'utf8'));

rmSync(join(HERE, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(HERE, 'node_modules/typescript/bin/tsc'), '-p', join(HERE, 'tsconfig.json')], {
  stdio: 'inherit',
});

const result = await build({
  entryPoints: [join(HERE, 'src/index.ts')],
  bundle: true,
  format: 'esm',
  minify: true,
  target: 'es2022',
  legalComments: 'none',
  write: false,
  banner: { js: `// ${name} ${version}, built from clients/js by \`npm run build\`: do not edit.` },
});
const code = result.outputFiles[0].contents;
writeFileSync(BUNDLE, code);
writeFileSync(join(HERE, 'dist/sessiond-client.min.js'), code);

const gzipped = gzipSync(code, { level: 9 }).length;
console.log(`bundle: ${code.length} bytes minified, ${gzipped} bytes minified and gzipped (budget ${BUDGET})`);
if (gzipped > BUDGET) {
  console.error(`bundle over budget: ${gzipped} > ${BUDGET} bytes gzipped`);
  process.exit(1);
}
