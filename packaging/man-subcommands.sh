#!/usr/bin/env bash
# Writes a help2man include file with a SUBCOMMANDS section: each subcommand's own --help (and
# for `runs` and `study`, each of their actions'), so `man ganpo` documents every option.
#   usage: packaging/man-subcommands.sh GANPO_BINARY OUTPUT_FILE
set -euo pipefail
G=$1
OUT=$2
# The names listed under "Subcommands:" (CLI11 2.5 on: "SUBCOMMANDS:") in a --help text.
subcommands() { sed -n '/^\(Subcommands\|SUBCOMMANDS\):/,$p' | sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p'; }
# A --help text as roff: literal lines; backslashes, leading dots or quotes and hyphens escaped
# (an unescaped "-" prints as a typographic hyphen, which breaks searching for --options).
literal() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/" -e 's/-/\\-/g'; }
section() {  # section "ganpo runs list" args...
  local title=$1
  shift
  printf '.SS "%s"\n.nf\n' "$title"
  # The first line repeats the summary above it; the usage names the program as installed.
  "$G" "$@" --help | sed -e 1d -e 's/^Usage: [^ ]*ganpo /Usage: ganpo /' | literal
  printf '.fi\n'
}
{
  printf '[SUBCOMMANDS]\n'
  for sub in $("$G" --help | subcommands); do
    section "ganpo $sub" "$sub"
    for action in $("$G" "$sub" --help | subcommands); do
      section "ganpo $sub $action" "$sub" "$action"
    done
  done
} > "$OUT"
