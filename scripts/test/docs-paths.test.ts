import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** A path as the docs write it from the repository's root: under a top-level folder, or a root file. */
const REPO_PATH =
  /(?<![\w./@-])(?:(?:\.ci|packages|scripts|proto|docs|drills)\/[\w.@*{},/-]*|(?:README\.md|package\.json|eslint\.config\.js|tsconfig(?:\.\w+)?\.json))/g;

/** Markdown links: [text](target). */
const LINK = /\]\(([^)\s]+)\)/g;

/**
 * A path in code quotes written from inside a package (`core/raw-node.ts`, `src/node`,
 * `test/snapshots.test.ts`): it must exist in some package, or under its src/.
 */
const PACKAGE_PATH = /`((?:src|test)\/[\w./-]*|[\w-]+\/[\w./-]*\.(?:ts|js|mjs|proto|json|md))`/g;

const packages = readdirSync(join(root, 'packages')).map((p) => `packages/${p}`);

/** `a/{b,c}.ts` → `a/b.ts`, `a/c.ts`. */
function expandBraces(path: string): string[] {
  const m = /\{([^{}]*)\}/.exec(path);
  if (!m) return [path];
  return m[1]!
    .split(',')
    .flatMap((alt) => expandBraces(path.slice(0, m.index) + alt + path.slice(m.index + m[0].length)));
}

/** Whether a path (possibly with `*` in its last parts) names something in the repository. */
function exists(path: string): boolean {
  // Build output is named in the docs by where it lands; its source is what the repository holds.
  const source = path.replace(/\/dist\/(.*)\.js$/, '/src/$1.ts').replace(/\/dist\/?$/, '/src');
  const parts = source.split('/').filter((p) => p !== '' && p !== '**');
  let dirs = [root];
  for (const part of parts) {
    if (!part.includes('*')) {
      dirs = dirs.map((d) => join(d, part)).filter((p) => existsSync(p));
      continue;
    }
    const re = new RegExp(`^${part.replace(/[.+?^$()[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
    dirs = dirs.flatMap((d) => {
      try {
        return readdirSync(d)
          .filter((n) => re.test(n))
          .map((n) => join(d, n));
      } catch {
        return [];
      }
    });
  }
  return dirs.length > 0;
}

interface Mention {
  doc: string;
  line: number;
  path: string;
  resolved: string;
}

function mentions(doc: string): Mention[] {
  const found: Mention[] = [];
  const lines = readFileSync(join(root, doc), 'utf8').split('\n');
  lines.forEach((text, i) => {
    for (const m of text.matchAll(REPO_PATH)) {
      const path = m[0].replace(/[.,:;]+$/, '');
      for (const p of expandBraces(path)) found.push({ doc, line: i + 1, path, resolved: p });
    }
    for (const m of text.matchAll(PACKAGE_PATH)) {
      const path = m[1]!;
      if (exists(path)) continue;
      const hit = packages.flatMap((p) => [`${p}/${path}`, `${p}/src/${path}`]).find((p) => exists(p));
      found.push({ doc, line: i + 1, path, resolved: hit ?? `packages/*/{,src/}${path}` });
    }
    for (const m of text.matchAll(LINK)) {
      const target = m[1]!.split('#')[0]!;
      if (target === '' || /^[a-z]+:/i.test(target)) continue;
      const resolved = relative(root, join(root, dirname(doc), target));
      found.push({ doc, line: i + 1, path: m[1]!, resolved });
    }
  });
  return found;
}

const docs = [
  'README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

describe('the docs name only paths and scripts that exist', () => {
  it('finds the paths it is meant to check', () => {
    // Guards the checker itself: a pattern that matched nothing would pass every doc.
    const all = docs.flatMap(mentions).map((m) => m.resolved);
    expect(all).to.include.members(['packages/raft/src/node/status.ts', 'docs/api.md', 'proto/hyperfarm/v1']);
    expect(exists('packages/api/src/*.ts')).to.equal(true);
    expect(exists('packages/raft/dist/node/kv-server.js')).to.equal(true);
    expect(exists('packages/nowhere/x.ts')).to.equal(false);
  });

  it('and only npm scripts that exist', () => {
    const scripts = Object.keys(
      (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: object }).scripts,
    );
    const missing = docs.flatMap((doc) =>
      readFileSync(join(root, doc), 'utf8')
        .split('\n')
        .flatMap((text, i) =>
          [...text.matchAll(/npm run ([a-z][\w:-]*\w)(?![\w:<-])/g)]
            .filter((m) => !scripts.includes(m[1]!))
            .map((m) => `${doc}:${i + 1} names 'npm run ${m[1]}', which package.json does not define`),
        ),
    );
    expect(missing, missing.join('\n')).to.deep.equal([]);
  });

  for (const doc of docs) {
    it(doc, () => {
      const missing = mentions(doc)
        .filter((m) => !exists(m.resolved))
        .map(
          (m) =>
            `${m.doc}:${m.line} names '${m.path}'${m.resolved !== m.path ? ` (${m.resolved})` : ''}, which does not exist`,
        );
      expect(missing, missing.join('\n')).to.deep.equal([]);
    });
  }
});
