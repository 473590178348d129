// Open an email's HTML file in Debian's chromium (playwright-core, nothing downloaded),
// click the brief's citation of a paper as a person would, and report where the page went:
// the URL's fragment, and the cited card's place in the viewport, as JSON on stdout.
// usage: node click_cite.mjs FILE NN   (FILE absolute; NN the paper number, e.g. 05)
import { chromium } from "playwright-core";

const [file, number] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 640, height: 700 } });
  await page.goto("file://" + file);
  const link = page.locator(`a.nl-cite[href="#p${number}"]`).first();
  const before = await page.evaluate(() => window.scrollY);
  const label = await link.textContent();
  const title = await link.getAttribute("title");
  await link.click();
  await page.waitForFunction((y) => window.scrollY !== y, before, { timeout: 5000 });
  const seen = await page.evaluate((n) => {
    const card = document.getElementById("p" + n);
    const box = card.getBoundingClientRect();
    const num = card.querySelector(".nl-num");
    return { hash: location.hash, scrollY: window.scrollY, cardTop: box.top,
             innerHeight: window.innerHeight, cardNumber: num ? num.textContent : null };
  }, number);
  console.log(JSON.stringify({ label, title, before, ...seen }));
} finally {
  await browser.close();
}
