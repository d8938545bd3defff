import { choiceOption } from '../options.js';
import { AimdController } from './aimd.js';
import { CanaryController } from './canary.js';
import type { ThrottleOptions } from './controller-options.js';
import { OffController } from './off.js';
import { PardaController } from './parda.js';
import { ThresholdController } from './threshold.js';
import { CONTROLLER_NAMES, DEFAULT_CONTROLLER, type ControllerName, type ThrottleController } from './types.js';

/**
 * Creates a controller by name ('canary', 'threshold', 'aimd', 'parda' or 'off').
 * Throws LowtideError INVALID_ARGUMENT for an unknown name or a bad option.
 */
export function createController(
  name: ControllerName | string = DEFAULT_CONTROLLER,
  options: ThrottleOptions = {},
): ThrottleController {
  switch (choiceOption('throttle', name, CONTROLLER_NAMES, DEFAULT_CONTROLLER)) {
    case 'off':
      return new OffController(options);
    case 'threshold':
      return new ThresholdController(options);
    case 'aimd':
      return new AimdController(options);
    case 'parda':
      return new PardaController(options);
    case 'canary':
      return new CanaryController(options);
  }
}
