/**
 * The action's entry point, for both `main` and `post` in action.yml (one bundle, as
 * actions/checkout does): the main step saves `isPost` in the action's state, so the post step,
 * started with the same file, knows which it is.
 */
import * as core from '@actions/core'
import { run, STATE_IS_POST } from './main'
import { post } from './post'

if (core.getState(STATE_IS_POST) === 'true') {
  // It reports its own failures (src/report/publish.ts) and never fails the job.
  post().catch(() => undefined)
} else {
  // Exit when the run is done even if a connection or timer is still open (a timed-out step).
  void run().finally(() => process.exit())
}
