#!/bin/sh
# The stand-in agent's start-up: two X displays, each shared over VNC by x11vnc (localhost only)
# and served as noVNC by websockify on the agent's ports: 6081 (Chrome) and 6082 (Terminal).
set -e
start_desktop() {  # display, VNC port, noVNC port
  # -retro: the classic root weave, so even an empty desktop is visibly not blank.
  Xvfb ":$1" -screen 0 1024x768x24 -nolisten tcp -retro &
  for _ in $(seq 1 50); do [ -e "/tmp/.X11-unix/X$1" ] && break; sleep 0.1; done
  x11vnc -display ":$1" -rfbport "$2" -localhost -nopw -forever -shared -quiet -bg \
    -o "/tmp/x11vnc-$1.log"
  websockify --web /usr/share/novnc "$3" "127.0.0.1:$2" >"/tmp/websockify-$3.log" 2>&1 &
}
start_desktop 1 5901 6081
start_desktop 2 5902 6082
DISPLAY=:2 xterm -geometry 100x30+40+40 -e sh -c 'echo claworc terminal; exec sh' &
# Keep PID 1 alive while the desktops run; SIGTERM (docker stop) ends the container at once.
trap 'exit 0' TERM INT
while :; do sleep 1 & wait $!; done
