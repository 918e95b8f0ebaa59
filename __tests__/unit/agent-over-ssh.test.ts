import { startAgentOverSsh, VerbWire } from '../../src/target/agent/over-ssh'
import { AgentSession } from '../../src/target/agent/session'
import { plainLog } from '../../src/log/untrusted'
import { RemoteResult } from '../../src/ssh/connection'

/**
 * The agent's session over SSH, its answers read (src/target/agent/over-ssh.ts): a wire that
 * answers as the target's scripts would, and records what it was asked.
 */
function session(decideAnswer: Partial<RemoteResult>): Promise<{ s: AgentSession; asked: string[][] }> {
  const asked: string[][] = []
  const answer = (verb: string, args: string[]): RemoteResult => {
    asked.push([verb, ...args])
    if (verb === 'start-agent') return { exitCode: 0, stdout: 'started-setsid\n', stderr: '' }
    return { exitCode: 0, stdout: '', stderr: '', ...decideAnswer }
  }
  const wire: VerbWire = {
    label: 'target root@pi',
    log: plainLog,
    gated: false,
    run: async (verb, args) => answer(verb, args),
    runRetrying: async (verb, args) => answer(verb, args)
  }
  return startAgentOverSsh(wire, {
    dir: '/run/nix-deploy-action/a',
    toplevel: '/nix/store/0000000000000000000000000000000a-nixos-system',
    action: 'switch',
    activationTimeoutSeconds: 60,
    waitSeconds: 30,
    onTimeout: 'rollback',
    before: {}
  } as never).then(s => ({ s: s as AgentSession, asked }))
}

const STATE = 'agent=alive\ncreated-new=1\nsize=42\nstatus=0\ngeneration=3\noutcome=confirmed\n'

describe("the decision over SSH, with a look at the agent (decide.sh, then follow.sh's answer)", () => {
  it("asks with the log's offset and the wait in tenths; reads the answer's line, then the log and the state", async () => {
    const { s, asked } = await session({ stdout: 'won\nactivated\noutcome: confirmed\n', stderr: STATE })
    const r = await s.decide('confirm', { offset: 12, wait: { ms: 2000, knowsStatus: true } })
    expect(asked[asked.length - 1]).toEqual([
      'decide',
      '/run/nix-deploy-action/a',
      'confirm',
      '12',
      '262144',
      '20'
    ])
    expect(r.answer).toBe('won')
    expect(r.poll).toMatchObject({
      chunk: 'activated\noutcome: confirmed\n',
      size: 42,
      state: { outcome: 'confirmed', status: 0, generation: 3 }
    })
  })

  it('without a look: the answer alone, as before', async () => {
    const { s, asked } = await session({ stdout: 'lost:abort\n' })
    expect(await s.decide('confirm')).toEqual({ answer: 'lost:abort' })
    expect(asked[asked.length - 1]).toEqual(['decide', '/run/nix-deploy-action/a', 'confirm'])
  })

  it.each([
    ['no answer line (its decision could not be written): nothing taken as the log', 'activated\n', STATE],
    ['no state (the look did not answer whole)', 'won\nactivated\n', ''],
    ['the answer without its line end', 'won', STATE]
  ])(
    '%s: no poll; the next follow reads the log from where the action was',
    async (_what, stdout, stderr) => {
      const { s } = await session({ stdout, stderr })
      const r = await s.decide('confirm', { offset: 0, wait: { ms: 2000, knowsStatus: true } })
      expect(r.poll).toBeUndefined()
      expect(['', 'won']).toContain(r.answer)
    }
  )
})
