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
# Keys go through XTEST to the focused window: SDL takes `xdotool key --window` (XSendEvent) as a key that stays
# down, so a view key would cycle the views (and re-create the window) on every frame.
press() { xdotool windowfocus --sync "$(window)" && xdotool key "$1"; }
shoot() {  # shoot OUT SECONDS KEYS... : start the app (args in APP), press keys, let it play, capture the window
  out=$1; seconds=$2; shift 2
  "${APP[@]}" & app=$!
  window >/dev/null; sleep 6
  for k in "$@"; do press "$k"; sleep 1; done
  sleep "$seconds"
  import -window "$(window)" "$out"
  press Escape; press Escape; wait $app || true
}
APP=(diamond-play atari Breakout --weights "$1" --actions random --seed 0 --size 5 --horizon 1000)
shoot docs/atari_play.png 150 Right  # side by side; a first start compiles for ~1.5 min (cached after)
[ -n "${2:-}" ] || exit 0
APP=(diamond-play csgo --weights "$2" --fast --actions random --seed 0 --size 2)
shoot docs/csgo_play.png 20
