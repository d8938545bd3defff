/**
 * A backup's file catalog: every file and directory of the FAT volumes it
 * reads by used blocks, with each file's extents. It is built while the data
 * is read and written beside the manifest at the commit.
 */
import { join } from 'node:path';
import { toLowtideError } from '../../errors.js';
import type { ImagePlan } from '../../fs/plan.js';
import { openVolume } from '../../fs/volume.js';
import { CatalogWriter, FRAME_BYTES as CATALOG_FRAME_BYTES } from '../../repo/catalog.js';
import type { Manifest } from '../../repo/format.js';
import type { Repository } from '../../repo/repository.js';

/**
 * Writes every file and directory of the planned FAT volumes, with each file's
 * extents, to the catalog (excluded entries left out). The walk and the JSON
 * lines are made off the JS thread (Volume.catalogFrames), so the catalog does
 * not hold up the blocks being read meanwhile. Returns false when the plan has
 * no FAT volume (nothing to catalogue).
 */
async function buildCatalog(sourcePath: string, plan: ImagePlan, catalog: CatalogWriter): Promise<boolean> {
  let any = false;
  for (const p of plan.partitions) {
    if (p.mode !== 'used' || p.fat === null) continue;
    any = true;
    const excluded = plan.excluded.filter((e) => e.partition === p.index).map((e) => e.path);
    const vol = await openVolume(sourcePath, { partition: p.index });
    try {
      for (const frame of await vol.catalogFrames(p.index, excluded, CATALOG_FRAME_BYTES))
        await catalog.addFrame(frame.text, frame.entries);
    } finally {
      vol.close();
    }
  }
  return any;
}

export class BackupCatalog {
  readonly #writer: CatalogWriter;
  /** Resolves to false when there is nothing to catalogue, or the catalog could not be built. */
  readonly #built: Promise<boolean>;
  /** Written or dropped: nothing left to abort. */
  #settled = false;

  private constructor(writer: CatalogWriter, built: Promise<boolean>) {
    this.#writer = writer;
    this.#built = built;
  }

  /**
   * Starts cataloguing the FAT volumes of `plan` in `sourcePath`. A catalog
   * that cannot be built (a directory tree the walk rejects) costs file-level
   * restore of this backup, not the backup: it becomes a warning in the plan.
   */
  static async start(repo: Repository, sourcePath: string, plan: ImagePlan): Promise<BackupCatalog> {
    const writer = await CatalogWriter.create(repo.tmpDir, repo.config.compression.level);
    const built = buildCatalog(sourcePath, plan, writer).catch((err: unknown) => {
      plan.warnings.push(`no file catalog: ${toLowtideError(err, 'FAT_CORRUPT').message}`);
      return false;
    });
    return new BackupCatalog(writer, built);
  }

  /** Waits for the catalog; writes it beside the manifest and names it there, or drops it when there is none. */
  async addTo(manifest: Manifest, repo: Repository): Promise<void> {
    if (await this.#built) {
      const file = `${manifest.id}.catalog`;
      const sha256 = await this.#writer.finish(join(repo.backupsDir, file));
      manifest.catalog = { file, sha256, entries: this.#writer.entries };
    } else {
      await this.#writer.abort();
    }
    this.#settled = true;
  }

  /** Drops the catalog unless addTo() wrote or dropped it already. */
  async abort(): Promise<void> {
    if (!this.#settled) await this.#writer.abort();
  }
}
