// The research radar page in Debian's chromium (playwright-core, nothing downloaded).
// usage: node radar.mjs PAGE_URL OUT_DIR
// 1. At 375 and 1280 px, light and dark: a full-page screenshot, the page's width against
//    the viewport, anything requested from another origin, and axe-core's violations.
// 2. With JavaScript OFF (so every step is a plain link or form), the steps: follow
//    a citation in the brief to its card, add a seed paper by arXiv id and remove it, remove
//    a chip with its ×, add a broken topic (see the error), add a good one, press "another
//    batch" until the end, switch language, mark a paper not relevant, open yesterday's
//    issue in the archive, unsubscribe. Prints what it saw as JSON; the Python test checks
//    the database.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const [url, out] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const origin = new URL(url).origin;
const facts = { views: [], steps: {} };
try {
  for (const width of [375, 1280]) {
    for (const scheme of ["light", "dark"]) {
      const context = await browser.newContext({
        viewport: { width, height: 900 }, colorScheme: scheme, bypassCSP: true });
      const page = await context.newPage();
      const external = [];
      page.on("request", (r) => { if (!r.url().startsWith(origin)) external.push(r.url()); });
      for (const lang of ["en", "zh"]) {
        await page.goto(url + "&lang=" + lang);
        const shot = `${out}/radar-${width}-${scheme}-${lang}.png`;
        await page.screenshot({ path: shot, fullPage: true });
        // the top of the page, as a person first sees it (the README's screenshots)
        await page.setViewportSize({ width, height: width < 600 ? 1100 : 1000 });
        await page.screenshot({ path: shot.replace(".png", "-top.png") });
        await page.setViewportSize({ width, height: 900 });
        const sizes = await page.evaluate(() => ({
          scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
          // the seed's order: header, chips, another batch, numbered papers
          chipTop: document.querySelector(".chip").getBoundingClientRect().top,
          batchTop: document.querySelector(".batch").getBoundingClientRect().top,
          firstNum: document.querySelector(".num").textContent,
          htmlLang: document.documentElement.lang,
        }));
        await page.evaluate(axeSource);
        const axe = await page.evaluate(async () => {
          const r = await window.axe.run(document, { resultTypes: ["violations"] });
          return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length }));
        });
        facts.views.push({ width, scheme, lang, shot, ...sizes, axe });
      }
      facts.views.push({ width, scheme, external });
      await context.close();
    }
  }

  // the steps, without JavaScript
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 },
                                            javaScriptEnabled: false });
  const page = await context.newPage();
  const s = facts.steps;
  await page.goto(url);
  s.opened = await page.locator("h1").textContent();
  // a citation in the brief lands on its paper's card
  const cite = page.locator(".brief a.cite").first();
  s.citeHref = await cite.getAttribute("href");
  await cite.click();
  s.citeHash = new URL(page.url()).hash;
  s.citeCard = await page.locator(`article.paper${s.citeHash}`).count();
  s.citeInView = await page.locator(`article.paper${s.citeHash}`).evaluate(
    (el) => { const r = el.getBoundingClientRect(); return r.top >= 0 && r.top < window.innerHeight; });
  // a seed paper ("papers like mine"), added and removed with plain forms
  await page.getByLabel("arXiv id or DOI").fill("arXiv:1706.03762v7");
  await page.getByRole("button", { name: "Add paper", exact: true }).click();
  s.seedChips = await page.locator("section[aria-labelledby=seeds-h] .chip").allTextContents();
  await page.getByRole("button", { name: /^Remove seed paper: Attention Is All You Need/ }).click();
  s.seedChipsAfterRemove = await page.locator("section[aria-labelledby=seeds-h] .chip").count();
  await page.getByRole("button", { name: "Remove Category: stat.*" }).click();
  s.chipsAfterRemove = await page.locator(".chip").allTextContents();
  await page.getByLabel("Kind").selectOption("topic");
  await page.getByLabel("Author, topic or category").fill("(diffusion");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  s.addError = await page.getByRole("alert").textContent();
  s.addErrorMark = await page.locator("mark").count();
  await page.getByLabel("Kind").selectOption("topic");
  await page.getByLabel("Author, topic or category").fill("diffusion models");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  s.chipsAfterAdd = await page.locator(".chip").allTextContents();
  const ids = async () => page.locator("input[name=paper]").evaluateAll(
    (els) => [...new Set(els.map((e) => e.value))]);
  s.batches = [await ids()];
  while (await page.locator("a.batch").count()) {
    await page.locator("a.batch").click();
    s.batches.push(await ids());
    if (s.batches.length > 30) break;
  }
  s.endText = await page.locator("p.card").first().textContent();
  await page.getByRole("link", { name: "中文" }).click();
  s.zhLang = await page.locator("html").getAttribute("lang");
  s.zhHeadline = await page.locator("h1").textContent();
  s.zhBatchButton = await page.locator("a.batch").count() ? await page.locator("a.batch").textContent() : null;
  const first = page.locator("article.paper").first();
  s.markedPaper = await first.locator("input[name=paper]").first().getAttribute("value");
  await first.getByRole("button", { name: "不相关" }).click();
  s.markedPressed = await page.locator("article.paper").first()
    .getByRole("button", { name: "不相关" }).getAttribute("aria-pressed");
  await page.locator(".archive a", { hasText: "2026年11月21日" }).click();
  s.archiveHeading = await page.locator("h2#papers").textContent();
  s.archiveBadges = await page.locator(".badge").allTextContents();
  await page.getByRole("button", { name: "退订" }).click();
  s.afterUnsubscribe = await page.locator("#sub-h + p").textContent();
  await context.close();
  console.log(JSON.stringify(facts));
} finally {
  await browser.close();
}
