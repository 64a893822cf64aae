import { Command, Argument } from 'commander';
import type { CliIo } from './vhd.js';

/**
 * `hyperfarm completion bash|zsh`: a completion script made from the command tree itself, so a
 * new command completes without anyone editing a list. zsh runs the same function through its
 * bash compatibility layer (bashcompinit), which every zsh ships.
 */

interface Node {
  path: string;
  words: string[];
}

/** Every command path (" vm checkpoint") with the words that may follow it. */
function walk(cmd: Command, path: string, out: Node[]): void {
  const subs = cmd.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden);
  const words = [
    ...subs.flatMap((c) => [c.name(), ...c.aliases()]),
    ...cmd.options.filter((o) => !o.hidden).flatMap((o) => [o.long, o.short].filter((f): f is string => !!f)),
  ];
  out.push({ path, words });
  for (const c of subs) for (const name of [c.name(), ...c.aliases()]) walk(c, `${path} ${name}`, out);
}

export function bashCompletion(program: Command): string {
  const nodes: Node[] = [];
  walk(program, '', nodes);
  const name = program.name();
  const fn = `_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
  const known = nodes.filter((n) => n.path !== '').map((n) => `"${n.path}"`);
  return [
    `# ${name} completion for bash and zsh. Load it with:`,
    `#   bash: source <(${name} completion bash)    (or save it in /etc/bash_completion.d/${name})`,
    `#   zsh:  source <(${name} completion zsh)`,
    `${fn}() {`,
    '  local cur="${COMP_WORDS[COMP_CWORD]}" path="" i w words=""',
    '  for ((i = 1; i < COMP_CWORD; i++)); do',
    '    w="${COMP_WORDS[i]}"',
    '    case "$path $w" in',
    `      ${known.join('|')}) path="$path $w" ;;`,
    '    esac',
    '  done',
    '  case "$path" in',
    ...nodes.map((n) => `    "${n.path}") words="${n.words.join(' ')}" ;;`),
    '  esac',
    '  COMPREPLY=($(compgen -W "$words" -- "$cur"))',
    '}',
    '',
  ].join('\n');
}

export function completionCommand(io: CliIo, program: () => Command): Command {
  return new Command('completion')
    .description('print a shell completion script: source <(hyperfarm completion bash)')
    .addArgument(new Argument('<shell>', 'the shell').choices(['bash', 'zsh']))
    .action((shell: string) => {
      const script = bashCompletion(program());
      const fn = `_${program().name()}`;
      io.stdout(
        shell === 'bash'
          ? `${script}complete -F ${fn} ${program().name()}\n`
          : `autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n${script}complete -F ${fn} ${program().name()}\n`,
      );
    });
}
