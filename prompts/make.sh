#!/usr/bin/env bash
# Regenerates the shipped prompts: espeak-ng speaks each text, sox converts it to
# 8 kHz mono 16-bit WAV at a common loudness. Needs espeak-ng and sox
# (Debian: apt-get install -y espeak-ng sox). Output depends on the espeak-ng
# version (1.51 made the committed files), so regenerate only when a text changes.
set -euo pipefail

cd "$(dirname "$0")"

VOICE=${VOICE:-en-us}
# Words per minute: a little under espeak-ng's default 175, which sounds hurried on the phone.
SPEED=${SPEED:-165}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say() {
    local name=$1 text=$2
    mkdir -p "$(dirname "$name")"
    espeak-ng -v "$VOICE" -s "$SPEED" -w "$tmp/raw.wav" "$text"
    # -D: no dither, so runs are byte-identical. Leading silence is trimmed so a
    # prompt starts at once, trailing silence cut to 150 ms. The high-pass drops
    # rumble a phone line would not carry (headroom first: it overshoots); the
    # peak is then normalised to -3 dBFS.
    sox -D "$tmp/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$name.wav" \
        silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse \
        gain -6 highpass 100 pad 0 0.15 gain -n -3
}

say welcome "Welcome to switchboard."
say menu "For a conference, press 1. To leave a message, press 2. For an echo test, press 3. To speak to an operator, press 0. To hear these options again, press 9. To end the call, press star."
say operator-unavailable "The operator is not available. Please try again later."
say enter-pin "Please enter your PIN, followed by the hash key."
say invalid "That is not a valid choice."
say goodbye "Goodbye."
say record-after-tone "Please record your message after the tone. Press hash when you are done."
say enter-room "Please enter the conference number, followed by the hash key."

words=(zero one two three four five six seven eight nine)
for d in 0 1 2 3 4 5 6 7 8 9; do
    say "digits/$d" "${words[$d]}"
done

say conference/joined "You have joined the conference."
say conference/left "A participant has left."
say conference/alone "You are the only person in this conference."
say conference/locked "This conference is locked."
say conference/full "This conference is full."
say conference/wait-moderator "Please wait for the moderator."

say voicemail/saved "Your message has been saved."
say voicemail/options "To keep this message, press 1. To record it again, press 2."

# 1 kHz for 250 ms at -10 dBm0 (peak -13.1 dBFS), with 5 ms ramps against clicks.
sox -D -n -r 8000 -c 1 -b 16 -e signed-integer beep.wav \
    synth 0.25 sine 1000 gain -13.1 fade t 0.005 0.25 0.005
