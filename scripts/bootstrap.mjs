// The entry point of `npm start` and `npm test` on a fresh clone. It uses nothing but Node's
// standard library, because nothing else is installed yet: it installs the dependencies when
// they are missing or older than package-lock.json, builds, then hands over.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

function must(cmd, args, what) {
  const status = run(cmd, args);
  if (status !== 0) {
    process.stderr.write(`\nhyperfarm: ${what} failed (exit ${status})\n`);
    process.exit(status);
  }
}

function ensureInstalled() {
  const marker = join(root, 'node_modules', '.package-lock.json');
  const lock = join(root, 'package-lock.json');
  if (existsSync(marker) && statSync(marker).mtimeMs >= statSync(lock).mtimeMs) return;
  process.stderr.write('hyperfarm: installing dependencies (npm ci)...\n');
  must(npm, ['ci', '--no-audit', '--no-fund', '--loglevel=error'], 'npm ci');
}

const [mode, ...rest] = process.argv.slice(2);
// Lerna runs on Nx: keep it from starting a background daemon or reaching for its cloud.
process.env.NX_DAEMON ??= 'false';
process.env.NX_NO_CLOUD ??= 'true';
ensureInstalled();

if (mode === 'start') {
  must(npm, ['run', '--silent', 'build'], 'build');
  const launcher = spawn(process.execPath, ['--import', 'tsx', join('scripts', 'farm', 'main.ts'), ...rest], {
    cwd: root,
    stdio: 'inherit',
  });
  // The launcher owns Ctrl-C: it stops every child, then exits 0. The terminal sends Ctrl-C's
  // SIGINT to the launcher too, so this process only waits (a second SIGINT would make the
  // launcher give up its clean stop). A SIGTERM comes to this process alone (npm passes on a
  // `kill`): passed on, or the farm would run on without anyone to stop it. A `kill` of `npm
  // start` reaches npm and its shell, not this process: their end (this process handed to
  // another parent) stops the farm too.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => launcher.kill('SIGTERM'));
  const parent = process.ppid;
  const orphaned = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(orphaned); // once: a second signal makes the launcher give up its clean stop
    launcher.kill('SIGTERM');
  }, 1000);
  orphaned.unref();
  launcher.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else if (mode === 'test') {
  must(npm, ['run', '--silent', 'build'], 'build');
  must(npm, ['run', '--silent', 'typecheck'], 'type-check');
  must(npm, ['run', '--silent', 'lint'], 'lint');
  must(npm, ['run', '--silent', 'test:all'], 'tests');
} else {
  process.stderr.write('usage: node scripts/bootstrap.mjs start|test [args]\n');
  process.exit(2);
}
