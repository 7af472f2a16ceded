#!/usr/bin/env bash
# Turns a fresh Raspberry Pi OS Lite (Bookworm, 64-bit) into a recorder box. Run as root from a checkout of
# the project on the Pi:
#
#     sudo ./image/install.sh [options]          (image/README.md explains every step)
#
# It is safe to run again: it installs what is missing, updates the program when the checkout changed, never
# overwrites /etc/recorder/recorder.toml unless given --config or --enroll, restarts the service only when
# something changed, and only turns on the read-only root once /var/lib/recorder (the evidence
# spool) is on a persistent disk of its own.
#
# The helper functions above main() read and write only the files they are given, so the tests source
# this script and call them without root.
set -euo pipefail

PREFIX=/opt/recorder
VENV=$PREFIX/venv
CONF_DIR=/etc/recorder
CONF=$CONF_DIR/recorder.toml
UNIT=/etc/systemd/system/recorder.service
STATE=/var/lib/recorder
KEY_FILE=$STATE/keys/device-ed25519.pem
ENROLLED_MARK=$CONF_DIR/.enrolled-token
FSTAB=/etc/fstab
ASOUND_CONF=/etc/asound.conf
ASOUND_MARK="# managed by the recorder's image/install.sh"
TIMESYNC_DROPIN=/etc/systemd/timesyncd.conf.d/recorder.conf
JOURNAL_DROPIN=/etc/systemd/journald.conf.d/recorder.conf
OVERLAY_TOKEN=overlayroot=tmpfs:recurse=0
SPOOL_MOUNT_OPTIONS=defaults,noatime,nofail,x-systemd.device-timeout=30s
BUSY_STATES=" preflight notice recording closing "

# python3-picamera2 and python3-libcamera come from Raspberry Pi OS's own archive (libcamera is not on PyPI);
# python3-lgpio is the GPIO library gpiozero uses on the Pi 4 and Pi 5. gcc, libc6-dev, python3-dev and
# libcap-dev are there for the one case where pip has to build python-prctl (a picamera2 dependency) itself.
APT_PACKAGES=(
    python3-picamera2 python3-libcamera python3-lgpio python3-venv
    espeak-ng libportaudio2 alsa-utils fonts-wqy-microhei ffmpeg fdisk
    gcc libc6-dev python3-dev libcap-dev
)

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<'EOF'
Usage: sudo image/install.sh [OPTIONS]

Installs or updates the recorder on Raspberry Pi OS Lite (Bookworm, 64-bit), then makes the root filesystem
read-only (overlay) if /var/lib/recorder is on its own persistent ext4 disk.

Install options:
  --config FILE          install FILE as /etc/recorder/recorder.toml (checked first; the old one is kept as
                         a .bak); without it an existing configuration is never touched and the example is
                         installed only where there is none
  --spool-device PART    keep /var/lib/recorder on PART, an existing ext4 partition (e.g. /dev/sda1 or
                         /dev/mmcblk0p3); adds it to /etc/fstab by UUID and mounts it
  --format-spool DISK    ERASE the whole DISK (e.g. /dev/sda, a USB SSD), make one ext4 partition on it and
                         use it as with --spool-device; asks you to type the disk's name unless --yes
  --mic CARD             ALSA card id of the microphone (default: the first USB card that records)
  --speaker CARD         ALSA card id of the speaker (default: the first USB card that plays)
  --ntp "SERVER ..."     NTP servers to use instead of the distribution's (e.g. the site's time server)
  --enroll URL TOKEN     enroll this box at central with a token from `recorder central token` (runs
                         `recorder enroll`: keys made here, certificate, room and central's keys into the
                         configuration)
  --no-overlay           leave the root filesystem writable (bench or development box)
  --yes                  do not ask before erasing a disk with --format-spool

Other actions (no installing):
  --overlay on|off       turn the read-only root on or off from the next boot (off: to update or edit)
  --status               what is installed, and whether this box is ready and hardened
  --enrollment           print this box's signing key (for enrolling it by hand: recorder central enroll)
  -h, --help             this text

Exit status: 0 done; 1 error; 2 bad usage; 3 installed, but the read-only root was refused because
/var/lib/recorder is not on its own persistent disk (the message says what to do).
EOF
}

# ---- helpers that only touch the files they are given (the tests call these) ----------------------------

# source_digest DIR: one SHA-256 over the names and contents of the files the installer builds from (what
# install_program copies), so a second run over the same checkout knows the program is already installed.
source_digest() {
    (cd "$1" && find . \( -path ./.git -o -path ./.venv -o -path ./build -o -name '*.egg-info' -o -name __pycache__ \
        -o -path ./.hypothesis -o -path ./.mypy_cache -o -path ./.pytest_cache -o -path ./.ruff_cache \
        -o -path ./bench/work \) -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) |
        sha256sum | cut -c1-64
}

# cmdline_overlay_state FILE: "off", "on" (tmpfs overlay on / only) or "all-mounts" (overlayroot's default,
# which also puts /var/lib/recorder in RAM).
cmdline_overlay_state() {
    local line="" tok state=off
    local -a toks
    read -r line <"$1" || true
    read -r -a toks <<<"$line"
    for tok in "${toks[@]}"; do
        case $tok in
            "$OVERLAY_TOKEN") state=on ;;
            overlayroot=disabled) ;;
            overlayroot=*) state=all-mounts ;;
        esac
    done
    printf '%s\n' "$state"
}

# _cmdline_rewrite FILE [TOKEN]: drops every overlayroot= token from the one-line FILE, then puts TOKEN first.
_cmdline_rewrite() {
    local file=$1 token=${2:-} line="" tok
    local -a toks kept=()
    read -r line <"$file" || true
    read -r -a toks <<<"$line"
    if [[ -n $token ]]; then kept+=("$token"); fi
    for tok in "${toks[@]}"; do
        [[ $tok == overlayroot=* ]] || kept+=("$tok")
    done
    printf '%s\n' "${kept[*]}" >"$file.recorder-new"
    mv "$file.recorder-new" "$file"
}

# cmdline_overlay_on FILE: a RAM overlay on / only (recurse=0), so /var/lib/recorder and the other fstab
# mounts stay the real, persistent filesystems. Replaces raspi-config's plain overlayroot=tmpfs, whose
# default (recurse=1) would put every mount, the spool included, under a RAM overlay.
cmdline_overlay_on() { _cmdline_rewrite "$1" "$OVERLAY_TOKEN"; }

# cmdline_overlay_off FILE: no overlay from the next boot.
cmdline_overlay_off() { _cmdline_rewrite "$1"; }

# find_usb_card c|p [ASOUND_DIR]: the ALSA id of the first USB sound card that records (c) or plays (p).
find_usb_card() {
    local kind=$1 root=${2:-/proc/asound} dir pcm
    for dir in "$root"/card[0-9]*; do
        [[ -e $dir/usbid && -r $dir/id ]] || continue
        for pcm in "$dir"/pcm[0-9]*"$kind"; do
            if [[ -e $pcm ]]; then
                cat "$dir/id"
                return 0
            fi
        done
    done
    return 1
}

valid_card_id() { [[ $1 =~ ^[A-Za-z0-9_-]+$ ]]; }

# asound_conf MIC SPEAKER: /etc/asound.conf that makes ALSA's "default" record from card MIC and play to
# card SPEAKER (they may be the same card, e.g. a USB speakerphone). "plug" converts the sample rate and
# format; cards are named by id, not number, because USB card numbers change between boots.
asound_conf() {
    cat <<EOF
$ASOUND_MARK: re-run it with --mic/--speaker to change the cards.
# Delete the line above to keep your own edits: install.sh then leaves this file alone.
# The recorder records from and plays to ALSA's "default" device (no PulseAudio or PipeWire).
pcm.!default {
    type asym
    capture.pcm "recorder_mic"
    playback.pcm "recorder_speaker"
}
pcm.recorder_mic {
    type plug
    slave.pcm "hw:CARD=$1,DEV=0"
}
pcm.recorder_speaker {
    type plug
    slave.pcm "hw:CARD=$2,DEV=0"
}
# alsamixer without -c shows the microphone's capture gain.
ctl.!default {
    type hw
    card "$1"
}
EOF
}

# spool_mount_problem DIR: says why DIR is not a persistent disk of its own (nothing when it is one).
spool_mount_problem() {
    local dir=$1 target fstype options source majmin root_majmin
    if ! target=$(findmnt -n -o TARGET --target "$dir" 2>/dev/null) || [[ -z $target ]]; then
        printf '%s does not exist or no filesystem holds it\n' "$dir"
        return 0
    fi
    if [[ $target != "$dir" ]]; then
        printf '%s is not a mount point: it is part of the filesystem on %s\n' "$dir" "$target"
        return 0
    fi
    fstype=$(findmnt -n -o FSTYPE --mountpoint "$dir")
    source=$(findmnt -n -o SOURCE --mountpoint "$dir")
    options=$(findmnt -n -o OPTIONS --mountpoint "$dir")
    majmin=$(findmnt -n -o MAJ:MIN --mountpoint "$dir")
    root_majmin=$(findmnt -n -o MAJ:MIN --mountpoint /)
    if [[ $dir == / || $majmin == "$root_majmin" ]]; then
        printf '%s is on the root filesystem, not on a disk of its own\n' "$dir"
    elif [[ $fstype != ext4 ]]; then
        printf '%s is a %s filesystem, not ext4 (journaled, on a disk)\n' "$dir" "$fstype"
    elif [[ $source == *"["* ]]; then
        printf '%s is a bind mount of a folder on another filesystem (%s), not a disk of its own\n' "$dir" "$source"
    elif [[ ,$options, != *,rw,* ]]; then
        printf '%s is mounted read-only (%s)\n' "$dir" "$options"
    elif ! findmnt -n --fstab --tab-file "$FSTAB" --mountpoint "$dir" >/dev/null 2>&1; then
        printf '%s is mounted from %s, but not listed in %s, so it will not be mounted at boot\n' \
            "$dir" "$source" "$FSTAB"
    fi
}

# ---- steps of the installation (these change the system) -------------------------------------------------

overlay_active() { grep -q 'overlayroot=' /proc/cmdline && [[ $(findmnt -n -o FSTYPE --mountpoint /) == overlay ]]; }

boot_dir() {
    if [[ -f /boot/firmware/cmdline.txt ]]; then
        printf '/boot/firmware\n'
    elif [[ -f /boot/cmdline.txt ]]; then
        printf '/boot\n'
    else
        die "no cmdline.txt in /boot/firmware or /boot: is this Raspberry Pi OS?"
    fi
}

# edit_cmdline on|off: rewrites the real cmdline.txt, making its partition writable for the time it takes.
edit_cmdline() {
    local boot mnt remounted=""
    boot=$(boot_dir)
    mnt=$boot
    if [[ $(findmnt -n -o FSTYPE --mountpoint "$boot" || true) == overlay && -f /media/root-ro$boot/cmdline.txt ]]; then
        mnt=/media/root-ro$boot # a recurse=1 overlay is active: the real partition lies below it
    fi
    if [[ ,$(findmnt -n -o OPTIONS --mountpoint "$mnt" || true), == *,ro,* ]]; then
        mount -o remount,rw "$mnt" || die "cannot make $mnt writable to edit cmdline.txt"
        remounted=1
    fi
    "cmdline_overlay_$1" "$mnt/cmdline.txt"
    sync
    if [[ -n $remounted ]]; then
        mount -o remount,ro "$mnt" || warn "could not make $mnt read-only again"
    fi
    note "$mnt/cmdline.txt: $(cat "$mnt/cmdline.txt")"
}

check_platform() {
    local codename="" model=""
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    [[ $codename == bookworm ]] || warn "this is '${codename:-unknown}', not Raspberry Pi OS Bookworm: carrying on"
    [[ $(uname -m) == aarch64 ]] || warn "this is a $(uname -m) system, not the 64-bit OS: carrying on"
    if [[ -r /proc/device-tree/model ]]; then model=$(tr -d '\0' </proc/device-tree/model); fi
    [[ $model == *"Raspberry Pi"* ]] || warn "this is not a Raspberry Pi (${model:-no device-tree model}): carrying on"
    if [[ -n $model ]]; then note "board: $model"; fi
}

install_packages() {
    local -a want=("${APT_PACKAGES[@]}") missing=()
    local p
    # Time: systemd-timesyncd unless the box already uses chrony or ntpsec.
    if ! is_installed chrony && ! is_installed ntpsec; then want+=(systemd-timesyncd); fi
    for p in "${want[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        note "system packages already installed"
        return
    fi
    say "installing system packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        die "apt could not install them (above). python3-picamera2, python3-libcamera and python3-lgpio" \
            "come from Raspberry Pi OS's own apt archive: this must be Raspberry Pi OS, with the network up."
}

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

create_user() {
    local g
    if id -u recorder >/dev/null 2>&1; then
        note "user recorder exists"
    else
        say "creating the system user recorder"
        useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin \
            --comment "interview-room recorder" recorder
    fi
    for g in video audio gpio; do
        if getent group "$g" >/dev/null; then
            usermod -a -G "$g" recorder
        else
            warn "there is no group '$g' here (Raspberry Pi OS has it); the service needs it to start"
        fi
    done
}

install_program() {
    local build digest
    digest=$(source_digest "$SRC")
    if [[ -x $VENV/bin/recorder && -r $PREFIX/.source-digest && $(cat "$PREFIX/.source-digest") == "$digest" ]] &&
        grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg"; then
        note "the program in $VENV is already this checkout's: left as it is"
        return
    fi
    CHANGED=1
    if [[ -x $VENV/bin/python ]] && ! grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg"; then
        warn "$VENV cannot see the system's picamera2 and libcamera: making it again"
        rm -rf "$VENV"
    fi
    if [[ ! -x $VENV/bin/python ]]; then
        say "creating $VENV (with --system-site-packages, so apt's picamera2 and libcamera are visible)"
        install -d -m 0755 "$PREFIX"
        python3 -m venv --system-site-packages "$VENV"
    fi
    # Build from a clean copy, so the checkout gets no root-owned build/ or *.egg-info.
    build=$(mktemp -d)
    tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude=./.hypothesis --exclude=./.mypy_cache --exclude=./.pytest_cache \
        --exclude=./.ruff_cache --exclude=./bench/work -cf - . | tar -C "$build" -xf -
    say "installing the recorder into $VENV (pip; this takes a few minutes on a Pi)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${build}[pi]"
    # Same version number, new code: make pip replace the package itself (its dependencies stay).
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$build"
    # Can the installed program import what it needs? (-I and a scratch directory: not from the checkout,
    # and lgpio's notification pipes land there.)
    if ! (cd "$build" && LG_WD=$build "$VENV/bin/python" -I - <<'EOF'); then
import importlib

for name in ("libcamera", "picamera2", "sounddevice", "gpiozero", "lgpio", "av", "firmware_py.cli"):
    module = importlib.import_module(name)
    print(f"    {name:16} {getattr(module, '__version__', '')} {getattr(module, '__file__', '')}")
EOF
        die "the installed program cannot import what it needs (above); see image/README.md, Troubleshooting"
    fi
    rm -rf "$build"
    ln -sfn "$VENV/bin/recorder" /usr/local/bin/recorder
    install -d -m 0755 "$PREFIX/image"
    install -m 0644 "$SRC/image/README.md" "$SRC/image/recorder.service" "$SRC/image/recorder.toml" "$PREFIX/image/"
    install -m 0755 "$SRC/image/install.sh" "$PREFIX/image/"
    printf '%s\n' "$digest" >"$PREFIX/.source-digest"
}

# check_config_file FILE: the product's own check. A template given with --enroll is checked as on the
# simulator: it has no TLS files and no central keys yet (the enrollment writes them), which on the pi
# backend would be refused; start_service checks the enrolled result as the service will run it.
check_config_file() {
    local -a hal=()
    if [[ -n $ENROLL_URL ]]; then hal=(--hal sim); fi
    "$VENV/bin/recorder" run --config "$1" --check-config "${hal[@]}"
}

install_config() {
    install -d -m 0750 -o root -g recorder "$CONF_DIR"
    install -m 0640 -o root -g recorder "$SRC/image/recorder.toml" "$CONF.example"
    if [[ -n $CONFIG_FILE ]] && enrolled_with_token; then
        note "$CONF was made from $CONFIG_FILE and enrolled with this token: left as it is"
    elif [[ -n $CONFIG_FILE ]]; then
        check_config_file "$CONFIG_FILE" || die "$CONFIG_FILE is not a valid configuration (above); nothing changed"
        if [[ -e $CONF ]] && ! cmp -s "$CONFIG_FILE" "$CONF"; then
            cp -p "$CONF" "$CONF.bak-$(date +%Y%m%d-%H%M%S)"
            note "kept the previous configuration as $CONF.bak-*"
        fi
        if cmp -s "$CONFIG_FILE" "$CONF"; then
            note "$CONF is already $CONFIG_FILE"
        else
            install -m 0640 -o root -g recorder "$CONFIG_FILE" "$CONF"
            CHANGED=1
            say "installed $CONFIG_FILE as $CONF"
        fi
    elif [[ -e $CONF ]]; then
        note "$CONF exists: left as it is (the new example is $CONF.example)"
    else
        install -m 0640 -o root -g recorder "$SRC/image/recorder.toml" "$CONF"
        CHANGED=1
        say "installed the example configuration as $CONF"
    fi
}

setup_sound() {
    local mic=$MIC speaker=$SPEAKER
    local -a missing=()
    if [[ -z $mic ]]; then mic=$(find_usb_card c) || missing+=(microphone); fi
    if [[ -z $speaker ]]; then speaker=$(find_usb_card p) || missing+=(speaker); fi
    if ((${#missing[@]})); then
        warn "found no USB sound card for the ${missing[*]}: ALSA's default device is left as it is. Plug the" \
            "USB microphone and speaker in and run install.sh again, or name the cards with --mic/--speaker" \
            "('cat /proc/asound/cards' lists their ids, e.g. --speaker Headphones for a Pi 4's jack)."
        return
    fi
    valid_card_id "$mic" || die "--mic: '$mic' is not an ALSA card id (see cat /proc/asound/cards)"
    valid_card_id "$speaker" || die "--speaker: '$speaker' is not an ALSA card id (see cat /proc/asound/cards)"
    if [[ -e $ASOUND_CONF ]] && ! head -n 1 "$ASOUND_CONF" | grep -qF "$ASOUND_MARK"; then
        warn "$ASOUND_CONF was written by someone else: left alone. The recorder uses ALSA's default device;" \
            "make it record from '$mic' and play to '$speaker' there."
        return
    fi
    asound_conf "$mic" "$speaker" >"$ASOUND_CONF.recorder-new"
    chmod 0644 "$ASOUND_CONF.recorder-new"
    if cmp -s "$ASOUND_CONF.recorder-new" "$ASOUND_CONF"; then
        rm -f "$ASOUND_CONF.recorder-new"
        note "sound: ALSA default already records from '$mic' and plays to '$speaker'"
        return
    fi
    mv "$ASOUND_CONF.recorder-new" "$ASOUND_CONF"
    CHANGED=1
    say "sound: ALSA default records from card '$mic' and plays to card '$speaker' ($ASOUND_CONF)"
    note "set the levels with: alsamixer -c $mic (capture) and alsamixer -c $speaker, then: sudo alsactl store"
}

setup_time() {
    if is_installed chrony || is_installed ntpsec; then
        note "time: chrony or ntpsec is installed and keeps the clock; leaving it to them"
        return
    fi
    if [[ -n $NTP_SERVERS ]]; then
        install -d -m 0755 "$(dirname "$TIMESYNC_DROPIN")"
        printf '# Written by the recorder'"'"'s image/install.sh (--ntp).\n[Time]\nNTP=%s\n' "$NTP_SERVERS" \
            >"$TIMESYNC_DROPIN"
        note "time: NTP servers $NTP_SERVERS ($TIMESYNC_DROPIN)"
    fi
    timedatectl set-ntp true
    systemctl restart systemd-timesyncd.service
    case $(timedatectl show -p NTPSynchronized --value 2>/dev/null || true) in
        yes) say "time: systemd-timesyncd is on, and the clock is synchronised" ;;
        *) say "time: systemd-timesyncd is on; the clock is not synchronised yet (it needs the network)" ;;
    esac
}

# attach_spool PART: /var/lib/recorder on PART (ext4) from now on and at every boot.
attach_spool() {
    local part=$1 fstype uuid root_src boot_src where line tmp
    [[ -b $part ]] || die "$part is not a block device (lsblk lists the disks and partitions)"
    fstype=$(blkid -o value -s TYPE "$part" || true)
    [[ $fstype == ext4 ]] || die "$part holds ${fstype:-no filesystem}, not ext4. Use --format-spool DISK to" \
        "erase a whole disk and make one, or make it yourself: mkfs.ext4 -L recorder-spool $part"
    root_src=$(findmnt -n -o SOURCE --mountpoint / || true)
    boot_src=$(findmnt -n -o SOURCE --mountpoint /boot/firmware || findmnt -n -o SOURCE --mountpoint /boot || true)
    [[ $part != "$root_src" && $part != "$boot_src" ]] || die "$part is the system's own partition"
    where=$(findmnt -n -o TARGET --source "$part" | head -n 1 || true)
    [[ -z $where || $where == "$STATE" ]] || die "$part is mounted on $where: unmount it first"
    uuid=$(blkid -o value -s UUID "$part")
    line="UUID=$uuid $STATE ext4 $SPOOL_MOUNT_OPTIONS 0 2"
    if awk -v d="$STATE" '$1 !~ /^#/ && $2 == d' "$FSTAB" | grep -q .; then
        if ! awk -v d="$STATE" '$1 !~ /^#/ && $2 == d' "$FSTAB" | grep -q "^UUID=$uuid "; then
            cp -p "$FSTAB" "$FSTAB.bak-$(date +%Y%m%d-%H%M%S)"
            awk -v d="$STATE" '!($1 !~ /^#/ && $2 == d)' "$FSTAB" >"$FSTAB.recorder-new"
            printf '%s\n' "$line" >>"$FSTAB.recorder-new"
            mv "$FSTAB.recorder-new" "$FSTAB"
            note "$FSTAB: $STATE now comes from $part (the old one is kept as $FSTAB.bak-*)"
        fi
    else
        printf '# The recorder'"'"'s evidence spool: a persistent, journaled disk (image/README.md).\n%s\n' \
            "$line" >>"$FSTAB"
        note "$FSTAB: added $line"
    fi
    systemctl daemon-reload
    if [[ $where != "$STATE" ]]; then
        if systemctl is-active --quiet recorder.service; then
            say "stopping the recorder to move $STATE onto $part"
            systemctl stop recorder.service
        fi
        install -d -m 0750 "$STATE"
        tmp=$(mktemp -d)
        mount "$part" "$tmp"
        if [[ ! -e $tmp/keys ]]; then
            # A fresh disk: bring the device key (its identity at central) and anything else along.
            cp -a "$STATE/." "$tmp/"
        elif [[ -e $KEY_FILE ]] && ! cmp -s "$KEY_FILE" "$tmp/keys/device-ed25519.pem"; then
            warn "$part already holds another device key: this box now signs with THAT key." \
                "Enroll it again at central (install.sh --enrollment) or use a fresh disk."
        fi
        umount "$tmp"
        rmdir "$tmp"
        mount --fstab "$FSTAB" "$STATE"
    fi
    chown recorder:recorder "$STATE"
    chmod 0750 "$STATE"
    say "spool: $part (ext4, UUID $uuid) is mounted on $STATE"
}

# format_spool DISK: erase DISK, one ext4 partition on all of it, then attach it.
format_spool() {
    local disk=$1 root_src root_disk answer part
    [[ -b $disk ]] || die "$disk is not a block device (lsblk lists the disks)"
    [[ $(lsblk -ndo TYPE "$disk") == disk ]] || die "$disk is not a whole disk: give the disk (e.g. /dev/sda)," \
        "or use --spool-device for an ext4 partition"
    root_src=$(findmnt -n -o SOURCE --mountpoint / || true)
    root_disk=$(lsblk -ndo PKNAME "$root_src" 2>/dev/null || true)
    [[ -z $root_disk || /dev/$root_disk != "$disk" ]] || die "$disk is the disk this system runs from"
    if lsblk -nro MOUNTPOINT "$disk" | grep -q .; then
        die "something on $disk is mounted ($(lsblk -nro MOUNTPOINT "$disk" | xargs)): unmount it first"
    fi
    lsblk -o NAME,SIZE,MODEL,FSTYPE,LABEL "$disk"
    if [[ -z $YES ]]; then
        [[ -t 0 ]] || die "--format-spool erases $disk: add --yes when not running at a terminal"
        read -r -p "Everything on $disk will be erased. Type $disk to go on: " answer
        [[ $answer == "$disk" ]] || die "not erased"
    fi
    say "erasing $disk and making one ext4 partition labelled recorder-spool"
    wipefs -a -q "$disk"
    printf 'label: gpt\n,,L\n' | sfdisk --quiet "$disk"
    udevadm settle
    part=$(lsblk -nrpo NAME,TYPE "$disk" | awk '$2 == "part" { print $1; exit }')
    [[ -n $part ]] || die "no partition appeared on $disk"
    wipefs -a -q "$part"
    mkfs.ext4 -F -q -L recorder-spool "$part"
    attach_spool "$part"
}

install_unit() {
    if ! cmp -s "$SRC/image/recorder.service" "$UNIT"; then
        install -m 0644 "$SRC/image/recorder.service" "$UNIT"
        systemctl daemon-reload
        CHANGED=1
    fi
    systemctl enable --quiet recorder.service
    note "$UNIT installed and enabled"
}

# enroll_box: the product's own `recorder enroll` (PROTOCOL §13): the box makes its keys, claims its place at
# central with the token, and gets its certificate, room and central's keys into $CONF.
# A token is used once: a second run with the same command line finds it in $ENROLLED_MARK and leaves the
# enrollment as it is.
token_mark() { printf '%s' "$ENROLL_TOKEN" | sha256sum | cut -c1-64; }
enrolled_with_token() { [[ -n $ENROLL_TOKEN && -r $ENROLLED_MARK && $(cat "$ENROLLED_MARK") == "$(token_mark)" ]]; }

enroll_box() {
    if enrolled_with_token; then
        note "already enrolled with this token: left as it is"
        return
    fi
    say "enrolling this box at $ENROLL_URL"
    "$VENV/bin/recorder" enroll "$ENROLL_URL" "$ENROLL_TOKEN" --config "$CONF" ||
        die "enrollment failed (the line above says why); nothing else was changed by it"
    chown root:recorder "$CONF"
    chmod 0640 "$CONF"
    token_mark >"$ENROLLED_MARK"
    CHANGED=1
}

service_state() {
    [[ -r $STATE/status.json ]] || return 0
    "$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("state", ""))' \
        "$STATE/status.json" 2>/dev/null || true
}

start_service() {
    local state
    if ! runuser -u recorder -- "$VENV/bin/recorder" run --config "$CONF" --check-config; then
        warn "$CONF does not pass --check-config (above): the service is enabled but not started. Fix it," \
            "then: sudo systemctl restart recorder"
        return
    fi
    if cmp -s "$CONF" "$CONF.example"; then
        warn "$CONF is still the example: set device.id, unit, room, location, the officers and mqtt.host" \
            "for this room (image/README.md, step 6)"
    fi
    if systemctl is-active --quiet recorder.service; then
        if [[ -z $CHANGED ]]; then
            note "nothing changed: the running service is left alone"
            return
        fi
        state=$(service_state)
        if [[ $BUSY_STATES == *" $state "* ]]; then
            warn "a session is in progress ($state): not restarting. The new version runs after the next" \
                "restart: sudo systemctl restart recorder (once the session is closed)"
            return
        fi
        systemctl restart recorder.service
        say "recorder restarted"
    else
        systemctl start recorder.service
        say "recorder started"
    fi
}

# refuse_overlay PROBLEM: says why the read-only root stays off, and what to do.
refuse_overlay() {
    warn "NOT making the root filesystem read-only: $1."
    if [[ $(cmdline_overlay_state "$(boot_dir)/cmdline.txt") != off ]]; then
        # An overlay is configured anyway (raspi-config's plain one, or the spool disk went away): with the
        # spool not on a disk of its own, it would keep the evidence in RAM, which is worse than no overlay.
        warn "the overlay configured for the next boot would keep $STATE in RAM: turning it off"
        edit_cmdline off
    fi
    cat >&2 <<EOF

  The read-only root keeps every change in RAM and drops it at power-off. Evidence must survive a power
  cut, so $STATE (the spool) has to be on a persistent ext4 disk of its own first. Either:
    - plug in a USB SSD and run:   sudo $0 --format-spool /dev/sda      (erases that disk), or
    - use an ext4 partition:       sudo $0 --spool-device /dev/mmcblk0p3
  then run install.sh again (image/README.md, step 4). Use --no-overlay on a bench or development box.

EOF
}

# enable_overlay: the read-only root from the next boot. Only once spool_mount_problem has nothing to say.
enable_overlay() {
    command -v raspi-config >/dev/null || die "raspi-config is missing: the read-only root needs Raspberry Pi OS"
    say "making the root filesystem read-only (overlay in RAM) from the next boot"
    # What would otherwise fill the RAM overlay: the journal grows (kept in RAM with a cap instead), the swap
    # file would be made in RAM, and the daily apt timers download packages that a reboot throws away.
    install -d -m 0755 "$(dirname "$JOURNAL_DROPIN")"
    printf '%s\n' "# Written by the recorder's image/install.sh: the root is a RAM overlay." \
        "[Journal]" "Storage=volatile" "RuntimeMaxUse=64M" >"$JOURNAL_DROPIN"
    systemctl disable --now --quiet dphys-swapfile.service 2>/dev/null || true
    systemctl disable --now --quiet apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
    # raspi-config installs overlayroot and adds overlayroot=tmpfs; edit_cmdline then limits the overlay to /.
    DEBIAN_FRONTEND=noninteractive raspi-config nonint enable_overlayfs ||
        die "raspi-config could not enable the overlay (above)"
    edit_cmdline on
    OVERLAY_PENDING=1
}

disable_overlay() {
    if [[ $(cmdline_overlay_state "$(boot_dir)/cmdline.txt") == off ]]; then
        note "the read-only root is already off in $(boot_dir)/cmdline.txt"
    else
        say "turning the read-only root off from the next boot"
        edit_cmdline off
    fi
    if overlay_active; then
        say "reboot now (sudo reboot); then update or edit, and turn it back on: sudo $0 --overlay on"
    fi
}

show_status() {
    local boot problem key
    say "recorder service: $(systemctl is-enabled recorder.service 2>/dev/null || true)," \
        "$(systemctl is-active recorder.service 2>/dev/null || true)"
    if [[ -x $VENV/bin/recorder && -r $CONF ]]; then
        runuser -u recorder -- "$VENV/bin/recorder" run --config "$CONF" --check-config || true
    else
        note "not installed ($VENV/bin/recorder or $CONF is missing)"
    fi
    problem=$(spool_mount_problem "$STATE")
    if [[ -z $problem ]]; then
        say "spool: $(findmnt -n -o SOURCE,FSTYPE,SIZE,AVAIL --mountpoint "$STATE" | xargs) on $STATE"
    else
        say "spool: NOT on its own persistent disk: $problem"
    fi
    boot=$(boot_dir)
    say "read-only root: configured $(cmdline_overlay_state "$boot/cmdline.txt")," \
        "now $(if overlay_active; then echo on; else echo off; fi)"
    if [[ $(cmdline_overlay_state "$boot/cmdline.txt") == all-mounts ]]; then
        warn "the overlay covers every mount, the spool too (evidence in RAM): run sudo $0 --overlay on"
    fi
    say "clock: NTP synchronised: $(timedatectl show -p NTPSynchronized --value 2>/dev/null || echo unknown);" \
        "RTC: $(if [[ -e /dev/rtc0 ]]; then echo present; else echo none; fi)"
    if [[ -r $ASOUND_CONF ]]; then
        say "sound: $(grep -o 'hw:CARD=[A-Za-z0-9_-]*' "$ASOUND_CONF" | sed 's/hw:CARD=//' | paste -sd' ' |
            sed 's/^\(.*\) \(.*\)$/records from \1, plays to \2/')"
    else
        say "sound: no $ASOUND_CONF (ALSA's own default card)"
    fi
    sed -n 's/^ *\([0-9][0-9]*\) \[\([^] ]*\) *\]: \(.*\)$/    card \1: \2 (\3)/p' /proc/asound/cards 2>/dev/null || true
    key=$KEY_FILE
    say "device key: $(if [[ -e $key ]]; then echo "$key"; else echo "not made yet (the service makes it)"; fi)"
    if [[ -x $VENV/bin/recorder && -r $CONF ]]; then
        runuser -u recorder -- "$VENV/bin/recorder" status --config "$CONF" || true
    fi
}

show_enrollment() {
    [[ -x $VENV/bin/recorder && -r $CONF ]] || die "the recorder is not installed yet"
    # The product's own command: it reads the key the service made (and makes nothing itself).
    runuser -u recorder -- "$VENV/bin/recorder" identity --config "$CONF"
}

main() {
    local args="$*" problem status=0
    ACTION=install
    CONFIG_FILE="" SPOOL_PART="" FORMAT_DISK="" MIC="" SPEAKER="" NTP_SERVERS="" NO_OVERLAY="" YES=""
    OVERLAY_PENDING="" CHANGED="" ENROLL_URL="" ENROLL_TOKEN=""
    while (($#)); do
        case $1 in
            -h | --help)
                usage
                exit 0
                ;;
            --config | --spool-device | --format-spool | --mic | --speaker | --ntp | --overlay)
                (($# >= 2)) || {
                    printf 'install.sh: %s needs a value (see --help)\n' "$1" >&2
                    exit 2
                }
                case $1 in
                    --config) CONFIG_FILE=$(realpath -- "$2") ;;
                    --spool-device) SPOOL_PART=$2 ;;
                    --format-spool) FORMAT_DISK=$2 ;;
                    --mic) MIC=$2 ;;
                    --speaker) SPEAKER=$2 ;;
                    --ntp) NTP_SERVERS=$2 ;;
                    --overlay)
                        case $2 in
                            on) ACTION=overlay-on ;;
                            off) ACTION=overlay-off ;;
                            *)
                                printf 'install.sh: --overlay takes on or off, not %s\n' "$2" >&2
                                exit 2
                                ;;
                        esac
                        ;;
                esac
                shift
                ;;
            --enroll)
                (($# >= 3)) || {
                    printf 'install.sh: --enroll needs the address and the token: --enroll https://HOST:PORT TOKEN\n' >&2
                    exit 2
                }
                ENROLL_URL=$2 ENROLL_TOKEN=$3
                shift 2
                ;;
            --no-overlay) NO_OVERLAY=1 ;;
            --yes) YES=1 ;;
            --status) ACTION=status ;;
            --enrollment) ACTION=enrollment ;;
            *)
                printf 'install.sh: unknown option %s (see --help)\n' "$1" >&2
                exit 2
                ;;
        esac
        shift
    done
    if [[ -n $SPOOL_PART && -n $FORMAT_DISK ]]; then
        printf 'install.sh: give --spool-device or --format-spool, not both\n' >&2
        exit 2
    fi
    ((EUID == 0)) || die "run it as root: sudo $0 $args"

    case $ACTION in
        status)
            show_status
            return
            ;;
        enrollment)
            show_enrollment
            return
            ;;
        overlay-off)
            disable_overlay
            return
            ;;
        overlay-on)
            if [[ $(cmdline_overlay_state "$(boot_dir)/cmdline.txt") == on ]] && overlay_active; then
                note "the read-only root is already on"
                return
            fi
            problem=$(spool_mount_problem "$STATE")
            if [[ -n $problem ]]; then
                refuse_overlay "$problem"
                exit 3
            fi
            enable_overlay
            say "reboot now to start on the read-only root: sudo reboot"
            return
            ;;
    esac

    if overlay_active; then
        die "the root filesystem is a RAM overlay now: whatever is installed would be gone at the next boot." \
            "Run: sudo $0 --overlay off; sudo reboot; then run install.sh again (and --overlay on)."
    fi
    SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    [[ -f $SRC/pyproject.toml && -d $SRC/firmware_py ]] ||
        die "$SRC is not a checkout of the recorder: run install.sh from image/ inside the project"

    say "recorder image: installing from $SRC"
    check_platform
    install_packages
    create_user
    install_program
    install_config
    setup_sound
    setup_time
    if [[ -n $FORMAT_DISK ]]; then format_spool "$FORMAT_DISK"; fi
    if [[ -n $SPOOL_PART ]]; then attach_spool "$SPOOL_PART"; fi
    if [[ -n $ENROLL_URL ]]; then enroll_box; fi
    install_unit
    start_service

    if [[ -z $NO_OVERLAY ]]; then
        problem=$(spool_mount_problem "$STATE")
        if [[ -n $problem ]]; then
            refuse_overlay "$problem"
            status=3
        elif [[ $(cmdline_overlay_state "$(boot_dir)/cmdline.txt") == on ]]; then
            note "the read-only root is already configured"
        else
            enable_overlay
        fi
    else
        note "--no-overlay: the root filesystem stays writable"
    fi

    say "done"
    note "check:    systemctl status recorder; journalctl -u recorder -f; sudo -u recorder recorder status"
    if [[ -z $ENROLL_URL ]]; then
        note "enroll:   sudo recorder enroll https://CENTRAL:8443 TOKEN   (token: recorder central token, at central)"
    fi
    note "overview: sudo $PREFIX/image/install.sh --status"
    if [[ -n $OVERLAY_PENDING ]]; then
        say "reboot now to start on the read-only root: sudo reboot"
    fi
    exit "$status"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
