// Accessibility audit with axe-core (WCAG 2.x A and AA rules: labels, names, roles,
// colour contrast ≥ 4.5:1, …) of whatever a page shows.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const WCAG_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];

/**
 * The axe violations on `page` as short lines. Needs a context made with
 * `bypassCSP: true`: axe builds DOM in ways the app's Trusted Types policy refuses.
 */
export async function accessibilityViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE_SOURCE);
  return page.evaluate(async (tags) => {
    const result = await window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return result.violations.flatMap((violation) =>
      violation.nodes.slice(0, 5).map((node) => `${violation.id} (${violation.impact}) at ${node.target.join(' ')}: ${node.failureSummary.replace(/\s+/g, ' ')}`));
  }, WCAG_TAGS);
}
