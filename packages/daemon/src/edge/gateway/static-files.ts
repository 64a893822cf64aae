import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, relative, sep } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
};

const HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  // The page talks to its own daemon, and to the others' consoles when that one dies.
  'content-security-policy':
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
};

/**
 * Serves the console's built files. Only the files found in the folder are served, looked up by
 * their exact URL path in a table, so no request path is ever joined to a folder. The table is
 * read again when a path is not in it (a rebuild names its files anew).
 */
export class StaticFiles {
  private files = new Map<string, string>();
  private readAt = 0;

  constructor(private readonly dir: string) {
    this.scan();
  }

  get built(): boolean {
    return this.files.has('/index.html');
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', ...HEADERS }).end();
      return;
    }
    const path = new URL(req.url ?? '/', 'http://console').pathname;
    const key = path === '/' ? '/index.html' : path;
    if (!this.files.has(key) && Date.now() - this.readAt > 1_000) this.scan();
    const file = this.files.get(key);
    if (!file) {
      const message = this.built
        ? `${path} is not a file of the console\n`
        : `The console is not built in ${this.dir}: run \`npm run build\` in the repository, then reload.\n`;
      res.writeHead(this.built ? 404 : 503, { 'content-type': 'text/plain; charset=utf-8', ...HEADERS });
      res.end(message);
      return;
    }
    let body: Buffer;
    try {
      body = readFileSync(file);
    } catch {
      this.scan();
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', ...HEADERS }).end('gone\n');
      return;
    }
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': body.length,
      // Vite names built assets by their content: they never change under one name.
      'cache-control': key.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache',
      ...HEADERS,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private scan(): void {
    this.readAt = Date.now();
    const files = new Map<string, string>();
    const walk = (dir: string, depth: number) => {
      if (depth > 4) return;
      for (const name of readdirSync(dir)) {
        const full = join(dir, name);
        const st = statSync(full);
        if (st.isDirectory()) walk(full, depth + 1);
        else if (st.isFile() && TYPES[extname(name)])
          files.set(`/${relative(this.dir, full).split(sep).join('/')}`, full);
      }
    };
    if (existsSync(this.dir)) walk(this.dir, 0);
    this.files = files;
  }
}
