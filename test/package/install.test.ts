/**
 * The package as a user gets it: `npm pack` output installed into a fresh
 * app on a machine without a compiler (CC and CXX point at /bin/false, so
 * any compile fails), imported with import and require, type-checked as a
 * strict TypeScript program, and used for a backup and a restore.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'lowtide-package-'));
const app = join(dir, 'app');
const noCompiler = { ...process.env, CC: '/bin/false', CXX: '/bin/false', npm_config_build_from_source: '' };
let tarball = '';

function hasPrebuild(): boolean {
  const d = join(root, 'prebuilds', 'linux-x64');
  return existsSync(d) && readdirSync(d).some((f) => f.endsWith('.node'));
}

beforeAll(() => {
  // The prebuilt addon the package ships (prebuildify --napi --strip --tag-libc).
  if (!hasPrebuild()) execFileSync('npm', ['run', 'prebuild'], { cwd: root, stdio: 'ignore', timeout: 900_000 });
  // dist/ is built by npm test; --ignore-scripts keeps the output JSON only.
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
    cwd: root,
    encoding: 'utf8',
  });
  tarball = join(dir, (JSON.parse(out) as { filename: string }[])[0]!.filename);
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], {
    cwd: app,
    env: noCompiler,
    stdio: 'ignore',
    timeout: 600_000,
  });
}, 1_200_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the packed package', () => {
  it('ships its prebuilt addon and the built library, and refuses to pack without a prebuild', () => {
    const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n');
    expect(files).toContain('package/prebuilds/linux-x64/lowtide.glibc.node');
    expect(files).toContain('package/dist/index.js');
    expect(files).toContain('package/dist/index.d.ts');
    expect(files.some((f) => f.startsWith('package/test/'))).toBe(false);
    // The prepack check, in a copy of the package without prebuilds/.
    const bare = join(dir, 'bare');
    mkdirSync(bare);
    cpSync(join(root, 'package.json'), join(bare, 'package.json'));
    const r = spawnSync('npm', ['run', 'prepack'], { cwd: bare, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/no prebuilt addon in prebuilds\/linux-x64: run npm run prebuild first/);
  });

  it('installs without compiling', () => {
    const pkg = join(app, 'node_modules', 'lowtide');
    expect(existsSync(join(pkg, 'prebuilds', 'linux-x64', 'lowtide.glibc.node'))).toBe(true);
    expect(existsSync(join(pkg, 'build'))).toBe(false);
  });

  it('backs up and restores through import, loads through require, and throws only LowtideError', () => {
    const src = join(dir, 'disk.img');
    writeFileSync(src, randomFillSync(Buffer.alloc(3 << 20)));
    writeFileSync(
      join(app, 'run.mjs'),
      `
      import { backup, initRepository, restore, LowtideError, version } from 'lowtide';
      import { createRequire } from 'node:module';
      import { readFileSync } from 'node:fs';
      const required = createRequire(import.meta.url)('lowtide');
      const repo = ${JSON.stringify(join(dir, 'repo'))};
      await initRepository(repo);
      const { id } = await backup({ source: ${JSON.stringify(src)}, repository: repo, throttle: 'off' });
      const target = ${JSON.stringify(join(dir, 'restored.img'))};
      await restore({ repository: repo, backup: id, target, throttle: 'off' });
      const same = readFileSync(target).equals(readFileSync(${JSON.stringify(src)}));
      const errors = [];
      for (const call of [() => backup(42), () => restore({ repository: repo, backup: 'nope', target }), () => initRepository(7)]) {
        try { await call(); errors.push('no error'); } catch (e) { errors.push(e instanceof LowtideError ? e.code : String(e)); }
      }
      console.log(JSON.stringify({ same, version: typeof version, requireSame: required.backup === backup, errors }));
      `,
    );
    const r = spawnSync(process.execPath, ['run.mjs'], { cwd: app, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.same).toBe(true);
    expect(out.version).toBe('string');
    expect(out.requireSame).toBe(true);
    expect(out.errors).toEqual(['INVALID_ARGUMENT', 'BACKUP_NOT_FOUND', 'INVALID_ARGUMENT']);
  });

  it('type-checks a strict program with exactOptionalPropertyTypes against the shipped types', () => {
    writeFileSync(
      join(app, 'main.ts'),
      `
      import { backup, restore, openSource, openRepository, imageSource, LowtideError, type BackupResult, type Manifest } from 'lowtide';
      import { createController, LatencyHistogram } from 'lowtide/advanced';
      export async function run(repo: string, source: string, signal?: AbortSignal, rate?: number): Promise<Manifest> {
        // Optional fields take undefined under exactOptionalPropertyTypes.
        const r: BackupResult = await backup({ source, repository: repo, throttle: 'canary', signal, rateLimitBytesPerSecond: rate, onProgress: (p) => p.bytesDone });
        await restore({ repository: repo, backup: r.id, target: '/tmp/x.img', signal });
        await imageSource({ source, output: '/tmp/y.img', latencyTargetMs: 'auto', exclude: undefined });
        const opened = await openRepository(repo);
        const report = await opened.verify({ signal });
        void report.ok;
        void createController('canary').decide();
        void new LatencyHistogram().percentile(50);
        const s = await openSource(source, { direct: 'auto' });
        for await (const b of s.read(undefined, { blockSize: 1 << 20 })) void b.latencyNs;
        await s.close();
        return r.manifest;
      }
      export function code(e: unknown): string | undefined {
        return e instanceof LowtideError ? e.code : undefined;
      }
      `,
    );
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          noEmit: true,
          skipLibCheck: false,
          typeRoots: [join(root, 'node_modules', '@types')],
          types: ['node'],
        },
        files: ['main.ts'],
      }),
    );
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', app], { cwd: app, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
