/**
 * `npm start`: the local farm launcher, which lives in @hyperfarm/client (farm/launcher.ts) with
 * the ProcessFarm the drills and tests use. See docs/operations.md.
 */
import { runLauncher } from '@hyperfarm/client';

await runLauncher(process.argv.slice(2));
