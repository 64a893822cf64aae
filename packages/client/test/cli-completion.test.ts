import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { bashCompletion, hyperfarmProgram } from '../src/index.js';

/** Asks bash what it would complete after `words`, with the generated script loaded. */
function complete(words: string[]): string[] {
  const script = `${bashCompletion(hyperfarmProgram())}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}
_hyperfarm; printf '%s\\n' "\${COMPREPLY[@]}"`;
  return execFileSync('bash', ['-c', script], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

describe('hyperfarm completion', () => {
  it('completes commands, subcommands and options at any depth, skipping flags and arguments', () => {
    expect(complete(['hyperfarm', 'mi'])).to.deep.equal(['migration']);
    expect(complete(['hyperfarm', 'vm', 'check'])).to.deep.equal(['checkpoint']);
    expect(complete(['hyperfarm', 'vm', 'checkpoint', 're'])).to.deep.equal(['remove', 'rename']);
    expect(complete(['hyperfarm', '-v', 'host', 'un'])).to.deep.equal(['undrain']);
    expect(complete(['hyperfarm', 'host', 'ls', '--st'])).to.deep.equal(['--state']);
    expect(complete(['hyperfarm', 'members', ''])).to.include.members([
      'add',
      'promote',
      'rm',
      'transfer',
      'ls',
    ]);
  });

  it('prints a script for zsh that loads bash completion support first', async () => {
    let out = '';
    const io = { stdout: (t: string) => (out += t), stderr: () => {} };
    await hyperfarmProgram(io).parseAsync(['completion', 'zsh'], { from: 'user' });
    expect(out).to.match(
      /^autoload -U \+X compinit && compinit\nautoload -U \+X bashcompinit && bashcompinit\n/,
    );
    expect(out).to.match(/complete -F _hyperfarm hyperfarm\n$/);
  });
});
