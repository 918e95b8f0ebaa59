import { sshKeyPair } from './ssh-keys'
import { InputName, readInputs } from '../../src/inputs'

/** A deploy key and its known_hosts line, made once per test file. */
export const key = sshKeyPair('ed25519')
export const hostLine = `pi ${key.public}`

/** readInputs over these values (every other input empty, as the runner gives it). */
export function inputs(values: Partial<Record<InputName, string>>) {
  return readInputs(name => values[name] ?? '')
}

/** The inputs of a valid deploy of .#pi3 to 192.168.1.20. */
export const base = {
  flake: '.#pi3',
  'target-host': '192.168.1.20',
  'ssh-private-key': key.private,
  'known-hosts': hostLine
}
