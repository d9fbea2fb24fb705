# shellcheck shell=bash
# lib.sh: the recipe cache shared by the scripts in scripts/images/.
#
# A recipe is a script that produces one input tree for a layer. Its cache folder is
#   ${CARTE_CACHE:-$REPO/.cache}/images/<name>-<hash>/
# holding `tree/` (the layer's root, owners and modes as they must appear in the booted
# system), any side outputs the recipe names (the kernel's `vmlinuz`), and a `done` marker
# written last. <hash> is recipe_hash over the recipe's own text and its inputs, so an edited
# recipe or a changed input is a new folder and the old one is left as it was.
#
# Deliberately absent: no layer images (imaged's builders turn trees into erofs/ext4), no
# eviction of old folders, and no tree-producing helpers here: everything that decides a
# tree's content lives in the recipe, so the recipe's text is what its hash covers.
#
# Sourced, never run. Callers have `set -euo pipefail`.

# Bump when the folder layout below changes, so old folders are not mistaken for new ones.
CARTE_RECIPE_FORMAT=1

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
IMAGES_DIR=$REPO/scripts/images
CACHE_IMAGES=${CARTE_CACHE:-$REPO/.cache}/images

# log MESSAGE...: progress for humans on stderr; stdout carries only result paths.
log() {
  printf '%s: %s\n' "${RECIPE_NAME:-images}" "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

# recipe_hash RECIPE [INPUT...]: the first 16 hex digits of a sha256 over the recipe's text
# and its inputs. An INPUT is `key=value`, hashed as text, or `key=@path`, hashed by the
# content of the file at path. Every piece is framed with its length so that two different
# input lists can never produce the same byte stream.
recipe_hash() {
  local recipe=$1 input file
  shift
  [[ -r $recipe ]] || die "recipe_hash: cannot read recipe $recipe"
  {
    printf 'carte-recipe-format %s\n' "$CARTE_RECIPE_FORMAT"
    printf 'recipe %s\n' "$(wc -c <"$recipe")"
    cat "$recipe"
    for input in "$@"; do
      if [[ $input == *=@* ]]; then
        file=${input#*=@}
        [[ -r $file ]] || die "recipe_hash: cannot read input file $file"
        printf 'file %s %s\n' "${input%%=@*}" "$(sha256sum <"$file" | cut -d' ' -f1)"
      else
        printf 'input %s\n%s\n' "${#input}" "$input"
      fi
    done
  } | sha256sum | cut -c1-16
}

# recipe_dir NAME HASH: the cache folder of one recipe build.
recipe_dir() {
  printf '%s/%s-%s\n' "$CACHE_IMAGES" "$1" "$2"
}

# unmount_under DIR: lazily unmounts every mount at or below DIR, deepest first. An
# interrupted debootstrap leaves proc and sys mounted inside its target; removing the
# folder without this would reach into them.
unmount_under() {
  local dir=$1 mp
  # Field 5 of mountinfo is the mount point; cache paths are checked to hold no whitespace,
  # so the kernel's octal escaping never applies to them.
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r |
    while read -r mp; do
      log "unmounting leftover $mp"
      umount -l "$mp"
    done
}

# remove_partial DIR: removes a folder left by an interrupted or failed build.
remove_partial() {
  local dir=$1
  [[ -e $dir ]] || return 0
  log "removing partial build $dir"
  unmount_under "$dir"
  # --one-file-system: even if an unmount above failed, never delete across a mount.
  rm -rf --one-file-system -- "$dir"
}

# recipe_build NAME HASH BUILD_FN: prints the cache folder of NAME-HASH, building it first
# unless it is done. BUILD_FN is called as `BUILD_FN TREE DIR` with an empty TREE (mode
# 0755, root) inside the fresh folder DIR; it fills TREE and may write side outputs in DIR.
# A flock on a lock file beside the folder keeps two runs from building the same recipe at
# once; the second waits and then finds it done.
recipe_build() {
  local name=$1 hash=$2 build_fn=$3
  local dir lock fd start
  dir=$(recipe_dir "$name" "$hash")

  # Fast path without the lock: `done` is written last and never removed by a build.
  if [[ -f $dir/done ]]; then
    printf '%s\n' "$dir"
    return 0
  fi

  [[ $(id -u) -eq 0 ]] || die "building needs root (owners, device nodes, chroot); run as root"
  [[ $dir != *[[:space:]]* ]] || die "cache path '$dir' holds whitespace; set CARTE_CACHE"
  mkdir -p "$CACHE_IMAGES"
  lock=$CACHE_IMAGES/.$name-$hash.lock
  exec {fd}>"$lock"
  if ! flock -n "$fd"; then
    log "another run is building $name-$hash; waiting for it"
    flock "$fd"
  fi

  if [[ -f $dir/done ]]; then
    exec {fd}>&-
    printf '%s\n' "$dir"
    return 0
  fi

  remove_partial "$dir"
  mkdir -p "$dir"
  install -d -m 0755 -o 0 -g 0 "$dir/tree"
  start=$(date +%s)
  log "building $dir"
  # Called plainly, not under `if`: bash ignores `set -e` inside a function that runs as a
  # condition, and a half-failed build must stop at its first error.
  trap 'log "error: build of '"$name-$hash"' failed; its partial folder is removed on the next run"' EXIT
  "$build_fn" "$dir/tree" "$dir"
  trap - EXIT

  # The tree must be on disk before the marker says it is complete.
  sync -f "$dir"
  {
    printf 'name=%s\nhash=%s\n' "$name" "$hash"
    printf 'built=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'seconds=%s\n' "$(($(date +%s) - start))"
    printf 'tree_bytes=%s\n' "$(du -sb --apparent-size "$dir/tree" | cut -f1)"
  } >"$dir/done.tmp"
  sync -f "$dir/done.tmp"
  mv "$dir/done.tmp" "$dir/done"
  sync -f "$dir"
  exec {fd}>&-
  log "done in $(($(date +%s) - start)) s"
  printf '%s\n' "$dir"
}

# recipe_main NAME HASH BUILD_FN [ARG]: a recipe's entry point.
#   (no argument)  build unless done, print the cache folder
#   --path         print the cache folder without building; exit 3 if it is not done
recipe_main() {
  local name=$1 hash=$2 build_fn=$3 mode=${4:-build}
  case $mode in
  build)
    recipe_build "$name" "$hash" "$build_fn"
    ;;
  --path)
    local dir
    dir=$(recipe_dir "$name" "$hash")
    printf '%s\n' "$dir"
    [[ -f $dir/done ]] || exit 3
    ;;
  *)
    die "unknown argument '$mode' (expected nothing or --path)"
    ;;
  esac
}
