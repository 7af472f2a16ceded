// The session player: Media Source Extensions over the server's fragmented-MP4 segments (one per recorded
// segment, each at its own place on the session's timeline). A session still recording is followed live
// and carries on as a recording when it closes. Seeking or a timeline button fetches the segment holding
// that moment. No library: the browser's own MediaSource and fetch.
"use strict";
(function () {
  const video = document.getElementById("video");
  if (!video) return;
  const manifestUrl = video.dataset.manifest;
  const base = video.dataset.base;
  const liveNote = document.getElementById("live");
  const errorNote = document.getElementById("player-error");
  const AHEAD_S = 20, KEEP_BEHIND_S = 60, POLL_MS = 250;
  let segments = [];          // [index, start, end], in timeline order
  let closed = true;
  let wasLive = false;
  let more = false;           // the manifest may still grow: the session is open, or segments wait at central
  let sb = null;
  let cursor = 0;              // position in `segments` of the next one to append
  let appended = new Set();
  let busy = false;
  let following = false;      // live: stay at the newest segment
  let started = false;

  let ownSeek = false;          // the player's own seeks (start, across a break) are not the viewer's
  function seekTo(t) {
    ownSeek = true;
    video.currentTime = t;
  }

  function fail(text) {
    errorNote.textContent = text;
    errorNote.hidden = false;
  }

  function at(t) {             // the position of the segment holding time t (or the first after it)
    for (let i = 0; i < segments.length; i++) {
      if (t < segments[i][2] - 0.05) return i;
    }
    return segments.length;
  }

  function bufferedAhead() {
    const t = video.currentTime, b = video.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= t + 0.1 && t < b.end(i)) return b.end(i) - t;
    }
    return 0;
  }

  function waitUpdate() {
    return new Promise((resolve) => sb.addEventListener("updateend", resolve, { once: true }));
  }

  async function evict() {
    const t = video.currentTime;
    if (t > KEEP_BEHIND_S && video.buffered.length && video.buffered.start(0) < t - KEEP_BEHIND_S) {
      sb.remove(0, t - KEEP_BEHIND_S);
      await waitUpdate();
      appended = new Set([...appended].filter((i) => segments.find((s) => s[0] === i && s[2] > t - KEEP_BEHIND_S)));
    }
  }

  async function pump() {
    if (busy || !sb) return;
    busy = true;
    try {
      while (cursor < segments.length && (following || bufferedAhead() < AHEAD_S || !started)) {
        const [index, start] = segments[cursor];
        if (!appended.has(index)) {
          const response = await fetch(base + index + ".mp4", { credentials: "same-origin" });
          if (!response.ok) {
            if (!closed && response.status === 404) return;  // not viewable yet: the next poll tries again
            fail("片段 " + index + " 无法播放 segment " + index + " cannot be played: " + response.status + " " + (await response.text()));
            return;
          }
          const data = await response.arrayBuffer();
          await evict();
          sb.appendBuffer(data);
          await waitUpdate();
          appended.add(index);
          if (!started) {
            started = true;
            seekTo(following ? start : Math.max(video.currentTime, segments[0][1]));
          } else {
            caughtUp();
          }
        }
        cursor++;
        if (following) break;
      }
    } catch (err) {
      fail("播放出错 playback failed: " + err);
    } finally {
      busy = false;
    }
  }

  function skipGaps() {        // across an interruption's break, and to the first frame at time 0
    const t = video.currentTime, b = video.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= t && t < b.end(i)) return;
    }
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) > t && b.start(i) - t < 3600) {
        seekTo(b.start(i) + 0.001);
        return;
      }
    }
  }

  async function poll() {
    try {
      const response = await fetch(manifestUrl + "?poll=1", { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      const m = await response.json();
      segments = m.segments;
      if (m.closed && !closed) {  // the close arrived: play on as a recording
        closed = true;
        following = false;
        liveNote.hidden = true;
      }
      await setDuration(closed ? m.duration : (segments.length ? segments[segments.length - 1][2] : 0));
      more = !m.closed || m.waiting > 0;
      pump();
    } finally {
      // Watched live: follow closely, through the close until the last segment is viewable. Opened after the
      // close with segments still being made viewable at central: look now and then.
      if (more) setTimeout(poll, wasLive ? POLL_MS : 3000);
    }
  }

  async function setDuration(d) {
    while (sb && sb.updating) await waitUpdate();
    const mediaSource = window.__recorderMediaSource;
    if (mediaSource.readyState === "open" && d > 0 && Math.abs(mediaSource.duration - d) > 0.01) {
      const end = video.buffered.length ? video.buffered.end(video.buffered.length - 1) : 0;
      mediaSource.duration = Math.max(d, end);
    }
  }

  async function start() {
    const response = await fetch(manifestUrl, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      fail("无权播放 cannot play: " + response.status + " " + (await response.text()));
      return;
    }
    const m = await response.json();
    segments = m.segments;
    closed = m.closed;
    more = !m.closed || m.waiting > 0;
    const type = 'video/mp4; codecs="' + m.codecs + '"';
    if (!window.MediaSource || !MediaSource.isTypeSupported(type)) {
      fail("此浏览器不能播放 this browser cannot play " + type);
      return;
    }
    const mediaSource = new MediaSource();
    window.__recorderMediaSource = mediaSource;
    video.src = URL.createObjectURL(mediaSource);
    await new Promise((resolve) => mediaSource.addEventListener("sourceopen", resolve, { once: true }));
    sb = mediaSource.addSourceBuffer(type);
    sb.mode = "segments";
    if (!closed) {
      following = true;
      liveNote.hidden = false;
      cursor = Math.max(0, segments.length - 1);
    } else {
      mediaSource.duration = m.duration;
    }
    wasLive = !closed;
    if (more) setTimeout(poll, wasLive ? POLL_MS : 3000);
    await pump();
    if (!closed) video.play().catch(() => {});
  }

  video.addEventListener("seeking", () => {
    if (!segments.length) return;
    if (ownSeek) {
      ownSeek = false;
      return;
    }
    if (!closed) following = false;  // the viewer went elsewhere in the recording: stop following live
    cursor = at(video.currentTime);
    pump();
  });
  // Live, the player keeps one segment and a little in hand when the next arrives: enough to play on without
  // a stall until the one after. More in hand (it started on a segment already old) only adds delay, so it
  // plays a little faster, pitch kept, until that much is made up.
  const LIVE_MARGIN_S = 0.4, CATCH_UP_RATE = 1.25;
  let catchUpTo = 0;
  function caughtUp() {
    if (!following || !segments.length) return;
    const last = segments[segments.length - 1];
    const excess = bufferedAhead() - (last[2] - last[1]) - LIVE_MARGIN_S;
    if (excess > 0.1) {
      catchUpTo = video.currentTime + excess * CATCH_UP_RATE / (CATCH_UP_RATE - 1);
      video.playbackRate = CATCH_UP_RATE;
    }
  }
  function keepUp() {
    if (video.playbackRate !== 1.0 && (!following || video.currentTime >= catchUpTo)) video.playbackRate = 1.0;
  }
  video.addEventListener("timeupdate", () => { if (!following) pump(); keepUp(); });
  setInterval(() => { if (!video.paused) skipGaps(); }, 250);
  document.querySelectorAll("button.jump").forEach((button) => {
    button.addEventListener("click", () => {
      video.currentTime = parseFloat(button.dataset.t);
      video.play().catch(() => {});
    });
  });
  start().catch((err) => fail("播放出错 playback failed: " + err));
})();
