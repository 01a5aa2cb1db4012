// @coji/durably 0.15 peer for the durably benchmarks (run by benchmarks/run.py).
//
// Usage: node coji_durably_peer.mjs FIGURE --db PATH --sync NORMAL|FULL [sizes...]
// FIGURE: step | trigger | e2e | replay-setup | replay. Prints one JSON object on stdout.
// Storage: better-sqlite3 through Kysely's SqliteDialect, journal_mode=WAL and
// synchronous=NORMAL (process-crash safe) or FULL (power-loss safe).
// run.py copies this file next to its node_modules before running it.
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { createDurably, defineJob } from '@coji/durably'
import Database from 'better-sqlite3'
import { SqliteDialect } from 'kysely'
import { z } from 'zod'

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    db: { type: 'string' },
    sync: { type: 'string', default: 'FULL' },
    steps: { type: 'string', default: '2000' },
    count: { type: 'string', default: '2000' },
    runs: { type: 'string', default: '500' },
  },
})
const figure = positionals[0]
const steps = Number(opt.steps)
const state = { killAt: false, tEntered: null, perStep: null }

const stepsJob = defineJob({
  name: 'steps',
  input: z.object({ n: z.number() }),
  run: async (step, input) => {
    const t0 = performance.now()
    for (let i = 0; i < input.n; i++) await step.run(`s${i}`, () => i)
    state.perStep = (performance.now() - t0) / 1000 / input.n
    return { n: input.n }
  },
})

const replayJob = defineJob({
  name: 'replay',
  input: z.object({ n: z.number() }),
  run: async (step, input) => {
    for (let i = 0; i < input.n; i++) await step.run(`s${i}`, () => i)
    await step.run('sentinel', () => {
      if (state.killAt) process.kill(process.pid, 'SIGKILL')
      state.tEntered = performance.now()
      return input.n
    })
    return { n: input.n }
  },
})

// Short leases only for the replay figures, so that a resume need not wait 30 s.
const LEASE = { leaseMs: 1500, leaseRenewIntervalMs: 300 }

async function open(lease = {}) {
  const db = new Database(opt.db)
  db.pragma('journal_mode = WAL')
  db.pragma(`synchronous = ${opt.sync}`)
  const durably = createDurably({
    dialect: new SqliteDialect({ database: db }),
    jobs: { steps: stepsJob, replay: replayJob },
    ...lease,
  })
  await durably.migrate()
  return durably
}

const figures = {
  async step() {
    const d = await open()
    await d.jobs.steps.trigger({ n: 50 }) // warm up
    await d.processOne()
    await d.jobs.steps.trigger({ n: steps })
    await d.processOne()
    return { step_s: state.perStep, steps }
  },
  async trigger() {
    const d = await open()
    const count = Number(opt.count)
    for (let i = 0; i < 20; i++) await d.jobs.steps.trigger({ n: 1 }) // warm up
    const t0 = performance.now()
    for (let i = 0; i < count; i++) await d.jobs.steps.trigger({ n: 1 })
    const dt = (performance.now() - t0) / 1000
    return { trigger_per_s: count / dt, count }
  },
  async e2e() {
    const d = await open()
    const runs = Number(opt.runs)
    const t0 = performance.now()
    for (let i = 0; i < runs; i++) await d.jobs.steps.trigger({ n: steps })
    const done = await d.processUntilIdle({ maxRuns: runs + 1 })
    const dt = (performance.now() - t0) / 1000
    if (done !== runs) return { error: `processed ${done} of ${runs} runs` }
    return { e2e_s: dt, runs, steps }
  },
  async 'replay-setup'() {
    state.killAt = true
    const d = await open(LEASE)
    await d.jobs.replay.trigger({ n: steps })
    await d.processOne() // the sentinel step SIGKILLs this process
    return { error: 'sentinel did not kill the process' }
  },
  async replay() {
    const d = await open(LEASE)
    // The dead worker's lease must expire first (no same-host liveness signal here).
    await new Promise((r) => setTimeout(r, LEASE.leaseMs + 200))
    const t0 = performance.now()
    const p = d.processOne()
    await p
    if (state.tEntered === null) return { error: 'step N+1 not reached' }
    return { replay_s: (state.tEntered - t0) / 1000, steps }
  },
}

let out
try {
  if (!(figure in figures)) throw new Error(`unknown figure ${figure}`)
  out = await figures[figure]()
} catch (err) {
  out = { error: `${err?.name ?? 'Error'}: ${err?.message ?? err}` }
}
process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0))
