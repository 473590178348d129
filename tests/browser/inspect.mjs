// Open an HTML file in Debian's chromium (driven by playwright-core, which downloads
// nothing), at a given width and colour scheme; screenshot it and report what a person
// would see as JSON on stdout.
// usage: node inspect.mjs FILE|URL WIDTH OUT.png [light|dark] [HEIGHT]
// FILE is an absolute path; a URL (http://127.0.0.1:PORT/...) is loaded as it is, e.g. from
// `newsletter preview --serve`. The viewport is WIDTH x HEIGHT (default 900); with HEIGHT,
// the screenshot is that tall (the top of the email), without, the full page.
import { chromium } from "playwright-core";

const [file, width, out, scheme = "light", height] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({
    viewport: { width: Number(width), height: Number(height || 900) },
    colorScheme: scheme,
  });
  const target = /^https?:/.test(file) ? file : "file://" + file;
  const origin = target.startsWith("file:") ? "file:" : new URL(target).origin;
  const external = [];  // anything fetched from elsewhere than the page's own origin
  page.on("request", (r) => { if (!r.url().startsWith(origin)) external.push(r.url()); });
  await page.goto(target);
  await page.screenshot({ path: out, fullPage: !height });
  const facts = await page.evaluate(() => {
    const find = (text) => {
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walker.nextNode()) {
        if (walker.currentNode.textContent.includes(text)) {
          return walker.currentNode.parentElement.getBoundingClientRect().top;
        }
      }
      return null;
    };
    const colorOf = (text) => {
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walker.nextNode()) {
        if (walker.currentNode.textContent.includes(text)) {
          let el = walker.currentNode.parentElement;
          const color = getComputedStyle(el).color;
          let bg = "rgba(0, 0, 0, 0)";
          while (el && (bg === "rgba(0, 0, 0, 0)" || bg === "transparent")) {
            bg = getComputedStyle(el).backgroundColor;
            el = el.parentElement;
          }
          return { color, bg };
        }
      }
      return null;
    };
    return {
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
      innerHeight: window.innerHeight,
      briefTop: find(window.__briefMarker || "CROSS-FIELD BRIEF"),
      // the first paper card's number ("01."); the first .nl-num is that card's
      firstPaperTop: document.querySelector(".nl-num")
        ? document.querySelector(".nl-num").getBoundingClientRect().top : find("01."),
      firstPaperBottom: document.querySelector(".nl-num")
        ? document.querySelector(".nl-num").getBoundingClientRect().bottom : null,
      colors: Object.fromEntries(
        (window.__markers || ["01.", "Your research radar", "Extractive digest"]).map(
          (m) => [m, colorOf(m)])),
    };
  });
  facts.external = external;
  console.log(JSON.stringify(facts));
} finally {
  await browser.close();
}
