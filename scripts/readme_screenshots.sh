#!/usr/bin/env bash
# Screenshots of real play windows for the README, taken on a virtual X server.
# usage: scripts/readme_screenshots.sh ATARI_WEIGHTS [CSGO_WEIGHTS]   (needs xvfb, xdotool, x11-utils, imagemagick)
# Without CSGO_WEIGHTS only docs/atari_play.png is retaken.
set -euo pipefail
cd "$(dirname "$0")/.."
export DISPLAY=:77 SDL_VIDEODRIVER=x11 SDL_AUDIODRIVER=dummy
Xvfb $DISPLAY -screen 0 1600x900x24 -nolisten tcp & xvfb=$!
trap 'kill $xvfb' EXIT
sleep 1
window() { for _ in $(seq 300); do id=$(xwininfo -root -tree | awk '/"diamond-play/ {print $1; exit}'); [ -n "$id" ] && { echo "$id"; return; }; sleep 0.2; done; exit 1; }
shoot() {  # shoot OUT KEYS... : start the app (args in APP), press keys, wait, capture the window
  out=$1; shift
  "${APP[@]}" & app=$!
  id=$(window); sleep 6
  for k in "$@"; do xdotool key --window "$id" "$k"; sleep 4; id=$(window); done
  import -window "$id" "$out"
  xdotool key --window "$id" Escape Escape; wait $app || true
}
APP=(diamond-play atari Breakout --weights "$1" --actions random --seed 0 --size 5)
shoot docs/atari_play.png Right
[ -n "${2:-}" ] || exit 0
APP=(diamond-play csgo --weights "$2" --fast --actions random --seed 0 --size 2)
shoot docs/csgo_play.png
