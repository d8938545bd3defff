/** The throttle flags of the commands that touch production storage, and the throttle's line in a progress bar. */
import { Option, type Command } from 'commander';
import {
  CONTROLLER_NAMES,
  DEFAULT_CONTROLLER,
  LowtideError,
  THROTTLE_PRESETS,
  type ControllerName,
  type MultiJobThrottleSettings,
  type ThrottlePresetName,
  type ThrottleState,
} from '../index.js';
import { numberArg } from './args.js';
import { formatBytes } from './progress.js';

/**
 * Adds --throttle, --latency-target and --rate-limit. The admission limit
 * decides when the next of several jobs may start, so only commands that run
 * several jobs (backup of several sources) take it.
 */
export function addThrottleOptions(cmd: Command, withAdmission = false): Command {
  cmd
    .addOption(
      new Option('--throttle <name>', 'latency controller').choices([...CONTROLLER_NAMES]).default(DEFAULT_CONTROLLER),
    )
    .addOption(
      new Option(
        '--latency-target <ms|auto>',
        'throttling limit: latency to hold, in ms, or auto (measured idle latency)',
      )
        .default('auto')
        .argParser((t: string) => (t === 'auto' ? 'auto' : numberArg('--latency-target', 0.001)(t))),
    )
    .addOption(
      new Option(
        '--throttle-preset <name>',
        'named throttle settings; classic: --throttle threshold with the proportional law, --latency-target 30, and --admission-limit 20 for several sources (the defaults Veeam Backup & Replication documents)',
      ).choices(Object.keys(THROTTLE_PRESETS)),
    )
    .addOption(
      new Option('--rate-limit <MB/s>', 'fixed cap in MB/s (10^6 bytes), on top of the controller').argParser(
        numberArg('--rate-limit', 0.001),
      ),
    );
  if (withAdmission) {
    cmd.addOption(
      new Option(
        '--admission-limit <ms>',
        'with several sources: start no new backup while latency is above this',
      ).argParser(numberArg('--admission-limit', 0.001)),
    );
  }
  return cmd;
}

/**
 * The job options the throttle flags stand for (--rate-limit is in MB/s,
 * rateLimitBytesPerSecond in bytes per second). A preset's admission limit
 * applies only to a job of several sources.
 */
export function throttleSettings(o: Record<string, unknown>, several = false): MultiJobThrottleSettings {
  const rate = o.rateLimit !== undefined ? { rateLimitBytesPerSecond: (o.rateLimit as number) * 1e6 } : {};
  if (o.throttlePreset !== undefined) {
    const name = o.throttlePreset as ThrottlePresetName;
    const p = THROTTLE_PRESETS[name];
    if (o.throttle !== DEFAULT_CONTROLLER && o.throttle !== p.throttle) {
      throw new LowtideError(
        'INVALID_ARGUMENT',
        `--throttle-preset ${name} runs --throttle ${p.throttle}; it cannot be combined with --throttle ${String(o.throttle)}`,
      );
    }
    const admission = (o.admissionLimit as number | undefined) ?? p.admissionLimitMs;
    return {
      throttle: p.throttle,
      thresholdLaw: p.thresholdLaw,
      latencyTargetMs: o.latencyTarget === 'auto' ? p.latencyTargetMs : (o.latencyTarget as number),
      ...(several ? { admissionLimitMs: admission } : {}),
      ...rate,
    };
  }
  return {
    throttle: o.throttle as ControllerName,
    latencyTargetMs: o.latencyTarget as number | 'auto',
    ...(o.admissionLimit !== undefined ? { admissionLimitMs: o.admissionLimit as number } : {}),
    ...rate,
  };
}

/** The throttle's state for a progress bar. */
export function throttleInfo(t: ThrottleState): string {
  const probe =
    t.probeLatencyMs !== undefined ? `probe ${t.probeLatencyMs.toFixed(2)}/${t.probeTargetMs!.toFixed(2)} ms, ` : '';
  return `${probe}lat ${t.latencyMs.toFixed(2)} ms, delay ${t.delayMs.toFixed(1)} ms, QD ${t.queueDepth}, ${formatBytes(t.blockSize)}`;
}
