"""The feature pages' markup, style and script (plain JavaScript, nothing fetched): filters by model x dataset,
layer, side, label and the class a feature fires most on; a list of the matching features; a click renders one
feature's page from the JSON the report embeds once (``layershift.report.feature_pages``)."""

from __future__ import annotations

LIST_LIMIT = 200  # rows of the feature list drawn at once; the count says how many more match

STYLE = """
#feature-pages select{margin:0 1em .5em .3em}#fp-list tr{cursor:pointer}#fp-list tr:hover{background:#eef5ff}
.fp-context{font-family:ui-monospace,monospace;font-size:.85em;line-height:1.8;margin:.3em 0}
.fp-context span{padding:0 .1em;border-radius:2px}.fp-context .fp-peak{outline:1px solid #a33;font-weight:bold}
.fp-bar{display:inline-block;height:.8em;background:#4a7bd0;vertical-align:middle}#fp-page{border-top:2px solid #ccc;margin-top:1em}
"""

MARKUP = """
<div id="feature-pages">
<label>model / dataset<select id="fp-pair"></select></label><label>layer<select id="fp-layer"></select></label>
<label>side<select id="fp-side"></select></label><label>label<select id="fp-label"></select></label>
<label>fires most on class<select id="fp-class"></select></label>
<p id="fp-count" class="muted"></p>
<table><thead><tr><th>model / dataset</th><th>layer</th><th>side</th><th>feature</th><th>label</th><th>partner</th>
<th>decoder cosine</th><th>top tokens</th><th>fires most on</th><th>attribution rank</th></tr></thead>
<tbody id="fp-list"></tbody></table>
<div id="fp-page"><p class="muted">Click a feature to open its page.</p></div>
</div>
"""

SCRIPT = """
(() => {
  const data = JSON.parse(document.getElementById("fp-data").textContent);
  const position = Object.fromEntries(data.fields.map((name, index) => [name, index]));
  const field = (page, name) => page[position[name]];
  const groupOf = page => data.groups[field(page, "group")];
  const pairName = group => `${group.model} / ${group.dataset}`;
  const filters = ["pair", "layer", "side", "label", "class"].map(name => document.getElementById(`fp-${name}`));
  const [pairFilter, layerFilter, sideFilter, labelFilter, classFilter] = filters;
  const escape = text => String(text).replace(/[&<>"']/g, character => `&#${character.charCodeAt(0)};`);
  const number = (value, digits = 3) =>
    value === null || value === undefined || !Number.isFinite(Number(value)) ? "-" : Number(value).toPrecision(digits);
  const classifiers = {pretrained: "the linear probe on the frozen pretrained encoder", finetuned: "the fine-tuned model"};

  function fill(select, values) {
    select.innerHTML = "<option value=''>all</option>" +
      values.map(value => `<option value="${escape(value)}">${escape(value)}</option>`).join("");
  }
  function topClassName(page) {
    const top = field(page, "top_class");
    return top >= 0 ? (groupOf(page).classes[top] ?? String(top)) : "-";
  }
  function matches(page) {
    const group = groupOf(page);
    return (!pairFilter.value || pairName(group) === pairFilter.value)
      && (!layerFilter.value || String(group.layer) === layerFilter.value)
      && (!sideFilter.value || data.sides[field(page, "side")] === sideFilter.value)
      && (!labelFilter.value || field(page, "label") === labelFilter.value)
      && (!classFilter.value || topClassName(page) === classFilter.value);
  }
  function findPage(group, side, feature) {
    return data.pages.findIndex(page => field(page, "group") === group && field(page, "side") === side
      && field(page, "feature") === feature);
  }
  function listRow(page, index) {
    const group = groupOf(page);
    const tokens = field(page, "top_tokens").map(token => data.strings[token]).join(", ");
    const match = field(page, "match");
    return `<tr data-page="${index}"><td>${escape(pairName(group))}</td><td>${group.layer}</td>` +
      `<td>${data.sides[field(page, "side")]}</td><td>${field(page, "feature")}</td><td>${escape(field(page, "label"))}</td>` +
      `<td>${match >= 0 ? match : "-"}</td><td>${number(field(page, "cosine"))}</td><td>${escape(tokens)}</td>` +
      `<td>${escape(topClassName(page))}</td><td>${field(page, "attribution_rank") ?? "-"}</td></tr>`;
  }
  function renderList() {
    const shown = [];
    data.pages.forEach((page, index) => { if (matches(page)) shown.push([page, index]); });
    document.getElementById("fp-list").innerHTML =
      shown.slice(0, LIMIT).map(([page, index]) => listRow(page, index)).join("");
    document.getElementById("fp-count").textContent = `${shown.length} of ${data.pages.length} features match` +
      (shown.length > LIMIT ? `; the first ${LIMIT} are listed, narrow the filters for the rest` : "");
  }
  function context(item, group) {
    const [tokens, digits, label, activation] = item;
    const levels = [...digits].map(Number);
    const peak = levels.indexOf(Math.max(...levels));
    const spans = tokens.map((token, index) =>
      `<span${index === peak ? " class='fp-peak'" : ""} title="${levels[index] * 10} % of the top activation" ` +
      `style="background:rgba(255,120,0,${(levels[index] / 9).toFixed(2)})">${escape(data.strings[token])}</span>`);
    return `<p class="fp-context"><b>${escape(group.classes[label] ?? label)}</b> (activation ${number(activation)}): ` +
      `${spans.join(" ")}</p>`;
  }
  function classTable(page, group) {
    const means = field(page, "class_means");
    if (!means) return "<p class='muted'>No mean activation per class (no profile of this feature).</p>";
    const top = Math.max(...means.map(value => value ?? 0), 1e-12);
    const rows = means.map((value, label) => `<tr><td>${escape(group.classes[label] ?? label)}</td>` +
      `<td>${number(value)}</td><td style="text-align:left"><span class="fp-bar" style="width:${Math.max(0, 120 * (value ?? 0) / top)}px"></span></td></tr>`);
    return `<table><tr><th>class</th><th>mean activation</th><th></th></tr>${rows.join("")}</table>`;
  }
  function effectTable(page, group) {
    const side = field(page, "side");
    const classes = group.classes.map(name => `<th>logit ${escape(name)}</th>`).join("");
    const cells = values => (values ?? group.classes.map(() => null)).map(value => `<td>${number(value)}</td>`).join("");
    const ablated = field(page, "ablation_loss") !== null;
    return `<table><tr><th>effect on ${escape(classifiers[data.sides[side]])}</th><th>loss</th>${classes}</tr>` +
      `<tr><td>attribution (gradient x activation)</td><td>${number(field(page, "attribution_loss"))}</td>${cells(field(page, "attribution_logits"))}</tr>` +
      `<tr><td>exact ablation${field(page, "random_control") ? " (a random control feature)" : ""}</td>` +
      (ablated ? `<td>${number(field(page, "ablation_loss"))}</td>${cells(field(page, "ablation_logits"))}`
        : `<td colspan="${group.classes.length + 1}">not measured (only the top-attributed and the random control features are ablated)</td>`) +
      `</tr></table><p class="muted">Attribution rank ${field(page, "attribution_rank") ?? "-"} of ` +
      `${group.n_live[side]} live features; control: removing a random live feature changes the loss by ` +
      `${number(group.random_ablation[side])} (median |change|).</p>`;
  }
  function partnerLink(page, group) {
    const match = field(page, "match");
    if (match < 0) return "none";
    const other = 1 - field(page, "side");
    const target = findPage(field(page, "group"), other, match);
    const name = `${data.sides[other]} feature ${match}`;
    return (target >= 0 ? `<a href="#feature-pages" data-page="${target}">${name}</a>` : name) +
      `, decoder cosine ${number(field(page, "cosine"))}, activation correlation ${number(field(page, "correlation"))}`;
  }
  function renderPage(index) {
    const page = data.pages[index];
    const group = groupOf(page);
    const side = data.sides[field(page, "side")];
    const nullMatch = field(page, "null_match");
    const tokens = field(page, "top_tokens").map(token => data.strings[token]).join(", ") || "-";
    const contexts = field(page, "contexts").map(item => context(item, group)).join("") ||
      "<p class='muted'>No contexts (no profile of this feature).</p>";
    document.getElementById("fp-page").innerHTML =
      `<h3>${escape(pairName(group))}, layer ${group.layer}: ${side} feature ${field(page, "feature")} - ${escape(field(page, "label"))}</h3>` +
      `<p>Diff ${escape(group.reference)} vs ${escape(group.compared)}: verdict ${escape(group.verdict)}. ` +
      `Partner: ${partnerLink(page, group)}. Seed-null match: ${nullMatch >= 0 ? `feature ${nullMatch}` : "none"}, ` +
      `decoder cosine ${number(field(page, "null_cosine"))}, activation correlation ${number(field(page, "null_correlation"))}. ` +
      `Fires on ${number(100 * (field(page, "firing_rate") ?? NaN))} % of test tokens; top tokens: ${escape(tokens)}.</p>` +
      `<h4>Top-activating test contexts</h4>${contexts}<h4>Mean activation per class</h4>${classTable(page, group)}` +
      `<h4>Causal effect</h4>${effectTable(page, group)}`;
  }
  const LIMIT = __LIMIT__;
  fill(pairFilter, [...new Set(data.groups.map(pairName))]);
  fill(layerFilter, [...new Set(data.groups.map(group => group.layer))].sort((a, b) => a - b));
  fill(sideFilter, data.sides);
  fill(labelFilter, [...new Set(data.pages.map(page => field(page, "label")))].sort());
  fill(classFilter, [...new Set(data.groups.flatMap(group => group.classes))]);
  filters.forEach(select => select.addEventListener("change", renderList));
  document.getElementById("feature-pages").addEventListener("click", event => {
    const target = event.target.closest("[data-page]");
    if (target) { event.preventDefault(); renderPage(Number(target.dataset.page)); }
  });
  renderList();
})();
""".replace("__LIMIT__", str(LIST_LIMIT))


def feature_pages_html(pages_json: str) -> str:
    """The feature pages' section body: style, filters, list and page container, the JSON and the script."""
    return (
        f"<style>{STYLE}</style>{MARKUP}"
        f'<script type="application/json" id="fp-data">{pages_json}</script>'
        f"<script>{SCRIPT}</script>"
    )
