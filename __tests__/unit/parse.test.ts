import { parseAgentState } from '../../src/target/agent/outcome'

describe('agent state', () => {
  it("parses the follow script's key=value lines", () => {
    expect(parseAgentState('size=120\nstatus=0\ngeneration=7\noutcome=\nsh: 1: cannot open\n')).toEqual({
      size: 120,
      status: 0,
      generation: 7,
      outcome: undefined
    })
    expect(parseAgentState('size=5\nstatus=\ngeneration=\noutcome=rolled-back\n')).toEqual({
      size: 5,
      status: undefined,
      generation: undefined,
      outcome: 'rolled-back'
    })
  })
})
