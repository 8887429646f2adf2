# Shared by the launch scripts: `run CMD...` executes, or only prints with DRY_RUN=1.
run() {
  if [ "${DRY_RUN:-0}" = "1" ]; then
    printf '%q ' "$@"; printf '\n'
  else
    "$@"
  fi
}
