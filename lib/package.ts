/**
 * Where the package is installed and its version. This module runs from lib/
 * (sources), dist/ (compiled) and dist/bin/ (inside the bundled CLI, see
 * rolldown.config.mjs), so the root is found by looking upwards for the
 * nearest package.json rather than by a fixed number of levels.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return dirname(from);
  }
}

/** The directory holding lowtide's package.json (and build/ or prebuilds/). */
export const packageRoot = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

/** lowtide's version, from its package.json. */
export const version = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string })
  .version;
