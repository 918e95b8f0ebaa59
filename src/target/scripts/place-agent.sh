# Writes the agent (stdin) into the --dir among the agent's options, as prepare-agent.sh does, in
# the same command as start-agent.sh, which follows it (a login that takes commands; a deploy
# user's gate has the two verbs). A subshell: the private umask is not the agent's. Once the agent
# started (a retry whose first try got through), its file is left as it is.
# shellcheck shell=sh
place_dir='' prev=''
for a in "$@"; do
  [ "$prev" = --dir ] && place_dir=$a
  prev=$a
done
[ -n "$place_dir" ] && [ -e "$place_dir/started" ] || (
  umask 077 && [ -n "$place_dir" ] && mkdir -p "$place_dir" && cat >"$place_dir/agent.sh.new" &&
    mv -f "$place_dir/agent.sh.new" "$place_dir/agent.sh" && { [ -e "$place_dir/log" ] || : >"$place_dir/log"; }
) || {
  echo "could not write the activation agent into ${place_dir:-(no --dir)}" >&2
  exit 1
}
