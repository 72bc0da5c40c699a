// Builds the package with the pinned `tsc` and prints the size of the ESM
// output (raw and gzip):
//   node scripts/build.mjs           dist/index.js + dist/index.d.ts, and the
//                                    copy the gateway serves (static/notify-client.js)
//   node scripts/build.mjs --check   builds dist/ and fails when the committed
//                                    static/notify-client.js differs from it
//   node scripts/build.mjs --dist    builds dist/ only (the npm package)
// Two tsc passes: the JavaScript without comments (only the /*! banner), the
// declarations with their doc comments.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const served = path.resolve(pkgDir, '../../static/notify-client.js');
const check = process.argv.includes('--check');
const distOnly = process.argv.includes('--dist');
const tsc = path.join(pkgDir, 'node_modules/typescript/bin/tsc');

if (!fs.existsSync(tsc)) {
  console.error('build: typescript is not installed; run `npm ci` in clients/js (scripts/install-browser-deps does)');
  process.exit(1);
}

const dist = path.join(pkgDir, 'dist');
fs.rmSync(dist, { recursive: true, force: true });
const run = (...args) => execFileSync(process.execPath, [tsc, '-p', pkgDir, ...args], { stdio: 'inherit' });
run('--removeComments');
run('--emitDeclarationOnly');

const js = fs.readFileSync(path.join(dist, 'index.js'));
const gz = zlib.gzipSync(js, { level: 9 });
console.log(`notify-client: dist/index.js ${js.length} bytes, ${gz.length} bytes gzip`);

if (check) {
  const committed = fs.existsSync(served) ? fs.readFileSync(served) : null;
  if (!committed || !committed.equals(js)) {
    console.error(`build --check: ${path.relative(process.cwd(), served)} differs from a fresh build of ` +
      'clients/js/src; run `npm run build` in clients/js and commit it');
    process.exit(1);
  }
  console.log('build --check: static/notify-client.js matches the fresh build');
} else if (!distOnly) {
  fs.writeFileSync(served, js);
  console.log(`wrote ${path.relative(process.cwd(), served)}`);
}
