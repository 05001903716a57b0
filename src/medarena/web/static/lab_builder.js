// The visual recipe builder (/lab/builder). Everything on the page is built from
// GET /api/v1/lab/blocks (the block registry and the recipe's settings, each field typed)
// and GET /api/v1/lab/datasets, so blocks, task types and settings added on the server
// appear here by themselves. The recipe lives in `state`; every change re-renders the
// YAML pane. Validate posts the YAML to /api/v1/lab/recipes/validate and shows each
// problem under its line; Launch posts it to the lab runs API and follows the new run.
(function () {
  "use strict";

  const root = document.getElementById("builder");
  const csrf = root.dataset.csrf;
  const runsUrl = root.dataset.runs;
  const canLaunch = root.dataset.canLaunch === "true";
  const $ = (id) => document.getElementById(id);
  const KIND_TITLES = {
    preprocess: "Preprocessing", augment: "Augmentation", network: "Network",
    loss: "Loss", optimizer: "Optimiser", schedule: "Learning-rate schedule",
  };

  let catalogue = null;   // /api/v1/lab/blocks
  let datasets = [];      // /api/v1/lab/datasets
  let blocksByName = {};
  let lastProblems = [];  // problems of the YAML currently shown
  const state = {
    name: "my-recipe",
    description: "",
    dataset: { name: "", split: "", train: "", validation: "", target: "", targets: [] },
    task: {}, trainer: {}, export: {},
    blocks: {},            // kind -> [{block, params}] (list kinds) or {block, params}
  };

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }

  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const clone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));
  const label = (name) => name.replace(/_/g, " ");

  function defaultsOf(fields) {
    const out = {};
    for (const f of fields) out[f.name] = clone(f.default);
    return out;
  }

  function rangeText(f) {
    const parts = [];
    if (f.minimum !== undefined) parts.push(`≥ ${f.minimum}`);
    if (f.exclusive_minimum !== undefined) parts.push(`> ${f.exclusive_minimum}`);
    if (f.maximum !== undefined) parts.push(`≤ ${f.maximum}`);
    if (f.exclusive_maximum !== undefined) parts.push(`< ${f.exclusive_maximum}`);
    return parts.join(", ");
  }

  // ------------------------------------------------------------------ typed field forms

  // One labelled control for field spec `f` (from the API) holding `value`; `set(v)` stores
  // a new value. Returns the field's element.
  function fieldControl(f, value, set, idBase) {
    const id = `${idBase}-${f.name}`;
    const helpId = `${id}-help`;
    const bits = [f.description];
    const range = rangeText(f);
    if (range) bits.push(`(${range})`);
    if (f.type === "list") {
      let sizes = "comma-separated";
      if (f.min_items !== undefined && f.min_items === f.max_items) sizes += `, ${f.min_items} values`;
      bits.push(`[${sizes}${f.nullable ? "; empty: none" : ""}]`);
    } else if (f.nullable && f.type !== "object") {
      bits.push("[empty: none]");
    }
    if (f.required) bits.push("[required]");
    const help = el("small", { id: helpId, class: "muted", text: bits.filter(Boolean).join(" ") });
    const wrap = el("div", { class: "field" });

    if (f.type === "object") {
      if (!f.nullable && (value === null || value === undefined)) {
        value = defaultsOf(f.fields);
        set(value);
      }
      const box = el("fieldset", { class: "nested" }, el("legend", { text: label(f.name) }));
      const inner = el("div", { class: "fields" });
      const renderInner = () => {
        inner.replaceChildren();
        if (value === null || value === undefined) return;
        for (const sub of f.fields) {
          inner.append(fieldControl(sub, value[sub.name], (v) => { value[sub.name] = v; set(value); }, id));
        }
      };
      if (f.nullable) {
        const use = el("input", { type: "checkbox", id: `${id}-use`, "aria-describedby": helpId });
        use.checked = value !== null && value !== undefined;
        use.addEventListener("change", () => {
          value = use.checked ? clone(f.default) || defaultsOf(f.fields) : null;
          set(value);
          renderInner();
        });
        box.append(el("div", { class: "check" }, use, el("label", { for: `${id}-use`, text: `use ${label(f.name)}` })));
      }
      box.append(help, inner);
      renderInner();
      wrap.append(box);
      return wrap;
    }

    let control;
    if (f.type === "bool") {
      control = el("input", { type: "checkbox", id, "aria-describedby": helpId });
      control.checked = Boolean(value);
      control.addEventListener("change", () => set(control.checked));
      wrap.classList.add("check-field");
      wrap.append(el("div", { class: "check" }, control, el("label", { for: id, text: label(f.name) })), help);
      return wrap;
    }
    if (f.type === "enum") {
      control = el("select", { id, "aria-describedby": helpId });
      if (f.nullable || value === null || value === undefined) control.append(el("option", { value: "null", text: "(none)" }));
      for (const c of f.choices) control.append(el("option", { value: JSON.stringify(c), text: String(c) }));
      control.value = JSON.stringify(value === undefined ? null : value);
      control.addEventListener("change", () => set(JSON.parse(control.value)));
    } else if (f.type === "int" || f.type === "float") {
      control = el("input", {
        type: "number", id, "aria-describedby": helpId, step: f.type === "int" ? "1" : "any",
        min: f.minimum ?? f.exclusive_minimum, max: f.maximum ?? f.exclusive_maximum,
      });
      control.value = value === null || value === undefined ? "" : String(value);
      control.addEventListener("input", () => {
        const raw = control.value.trim();
        if (raw === "") set(f.nullable ? null : undefined);
        else set(Number(raw));
      });
    } else if (f.type === "list") {
      control = el("input", { type: "text", id, "aria-describedby": helpId, inputmode: f.items.type === "str" ? null : "decimal" });
      control.value = Array.isArray(value) ? value.join(", ") : "";
      control.addEventListener("input", () => {
        const raw = control.value.trim();
        if (raw === "") { set(f.nullable ? null : f.required ? undefined : []); return; }
        set(raw.split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => {
          if (f.items.type === "int" || f.items.type === "float") {
            const n = Number(s);
            return Number.isNaN(n) ? s : n;   // the server names a non-number
          }
          return s;
        }));
      });
    } else {
      control = el("input", { type: "text", id, "aria-describedby": helpId });
      control.value = value === null || value === undefined ? "" : String(value);
      control.addEventListener("input", () => set(control.value === "" && f.nullable ? null : control.value));
    }
    wrap.append(el("label", { for: id, text: label(f.name) }), control, help);
    return wrap;
  }

  function renderFields(container, fields, values, idBase, onChange) {
    container.replaceChildren();
    for (const f of fields) {
      container.append(fieldControl(f, values[f.name], (v) => { values[f.name] = v; onChange(f.name); }, idBase));
    }
  }

  // ------------------------------------------------------------------ data section

  const currentDataset = () => datasets.find((d) => d.name === state.dataset.name);
  const currentSplit = () => (currentDataset()?.splits || []).find((s) => s.name === state.dataset.split);

  function fillSelect(select, options, value, emptyText) {
    select.replaceChildren();
    if (!options.length) select.append(el("option", { value: "", text: emptyText }));
    for (const o of options) select.append(el("option", { value: o.value, text: o.text }));
    select.value = options.some((o) => o.value === value) ? value : (options[0]?.value ?? "");
    return select.value;
  }

  function renderData() {
    const ds = currentDataset();
    state.dataset.name = fillSelect($("dataset"), datasets.map((d) => ({ value: d.name, text: `${d.name} (${d.n_cases} cases)` })), state.dataset.name, "(no dataset)");
    const splits = currentDataset()?.splits || [];
    state.dataset.split = fillSelect($("split"), splits.map((s) => ({ value: s.name, text: s.name })), state.dataset.split, "(no split: make one with medarena datasets split)");
    const split = currentSplit();
    const subsets = (split?.subsets || []).map((s) => ({ value: s.name, text: `${s.name} (${s.n_cases} cases)` }));
    const pick = (want, fallback) => (subsets.some((o) => o.value === want) ? want : fallback);
    state.dataset.train = fillSelect($("train-subset"), subsets, pick(state.dataset.train, "train"), "(none)");
    state.dataset.validation = fillSelect($("validation-subset"), subsets, pick(state.dataset.validation, "validation"), "(none)");
    const hidden = split?.hidden_subsets || [];
    $("hidden-note").textContent = hidden.length
      ? `Hidden subsets (${hidden.join(", ")}) are test sets: the lab never trains or validates on them.`
      : "";
    const targets = split?.targets || [];
    const type = state.task.type;
    $("target-field").hidden = !(type === "classification" || type === "regression");
    const usable = targets.filter((t) => (type === "regression" ? t.kind !== "categorical" : true));
    state.dataset.target = fillSelect($("target"), usable.map((t) => ({ value: t.name, text: `${t.name} (${t.kind}, ${t.n_cases} cases)` })), state.dataset.target, "(no case labels)");
    $("targets-field").hidden = type !== "multilabel";
    const box = $("targets");
    box.replaceChildren();
    const binary = targets.filter((t) => t.kind === "binary");
    state.dataset.targets = state.dataset.targets.filter((n) => binary.some((t) => t.name === n));
    if (!binary.length) box.append(el("p", { class: "muted", text: "This split has no 0/1 case labels." }));
    for (const t of binary) {
      const id = `targets-${t.name}`;
      const cb = el("input", { type: "checkbox", id, value: t.name });
      cb.checked = state.dataset.targets.includes(t.name);
      cb.addEventListener("change", () => {
        state.dataset.targets = binary.map((x) => x.name).filter((n) => n === t.name ? cb.checked : state.dataset.targets.includes(n));
        update();
      });
      box.append(el("div", { class: "check" }, cb, el("label", { for: id, text: t.name })));
    }
  }

  function onDataChange(key, value) {
    state.dataset[key] = value;
    if (key === "name") {
      const ds = currentDataset();
      if (ds) { presetFromImages(ds); renderTask(); fitPatch(); }
    }
    if (key === "target") classesFromTarget();
    renderData();
    if (key === "name" || key === "split") classesFromLabelMaps();
    update();
  }

  // The dataset's images say how many axes and channels the task has.
  function presetFromImages(ds) {
    if (ds.spatial_dims) state.task.spatial_dims = ds.spatial_dims;
    if (ds.in_channels) state.task.in_channels = ds.in_channels;
  }

  // Segmentation: the split's label maps say how many classes there are (1 + the largest
  // label value the server read in them), so a preset recipe does not fail on its data.
  function classesFromLabelMaps() {
    const n = currentSplit()?.label_classes;
    if (state.task.type === "segmentation" && n && n >= 2) {
      state.task.num_classes = n;
      renderTask();
    }
  }

  // A classification target's distinct values are the classes (server-side: class_names).
  function classesFromTarget() {
    const t = (currentSplit()?.targets || []).find((x) => x.name === state.dataset.target);
    if (state.task.type === "classification" && t && t.values) {
      state.task.num_classes = t.values.length;
      renderTask();
    }
  }

  // ------------------------------------------------------------------ task, trainer, export

  // Task settings named after a task type (task.detection, ...) belong to that type only.
  function renderTask() {
    const types = catalogue.task_types;
    for (const f of catalogue.settings.task) {
      if (types.includes(f.name) && f.name !== state.task.type) state.task[f.name] = clone(f.default);
    }
    const fields = catalogue.settings.task.filter((f) => !types.includes(f.name) || f.name === state.task.type);
    renderFields($("task-fields"), fields, state.task, "task", (name) => {
      if (name === "type") onTaskType();
      if (name === "spatial_dims") fitPatch();
      update();
    });
  }

  function onTaskType() {
    renderTask();
    for (const kind of catalogue.kinds) {
      if (catalogue.list_kinds.includes(kind)) continue;
      const current = state.blocks[kind];
      if (!current || !supports(current.block)) state.blocks[kind] = firstBlock(kind);
    }
    renderData();
    classesFromTarget();
    classesFromLabelMaps();
    renderKinds();
    $("task-type")?.focus();
  }

  function fitPatch() {
    const dims = state.task.spatial_dims;
    const patch = state.trainer.patch_size;
    if (dims && (!Array.isArray(patch) || patch.length !== dims)) {
      state.trainer.patch_size = Array(dims).fill(32);
      renderFields($("trainer-fields"), catalogue.settings.trainer, state.trainer, "trainer", update);
    }
  }

  // ------------------------------------------------------------------ blocks

  const supports = (name) => Boolean(blocksByName[name]) && blocksByName[name].tasks.includes(state.task.type);
  const blocksOf = (kind) => catalogue.blocks.filter((b) => b.kind === kind);

  function firstBlock(kind) {
    const fallback = catalogue.defaults[kind];
    if (fallback && supports(fallback.block)) return { block: fallback.block, params: defaultsOf(blocksByName[fallback.block].params) };
    const b = blocksOf(kind).find((x) => supports(x.name));
    return b ? { block: b.name, params: defaultsOf(b.params) } : null;
  }

  function blockCard(kind, ref, index, count) {
    const spec = blocksByName[ref.block];
    const idBase = `${kind}-${index}`;
    const title = `${ref.block}`;
    const card = el("fieldset", { class: "block-card", "data-block": ref.block },
      el("legend", { text: `${index + 1}. ${title}` }),
      el("p", { class: "muted", text: spec.summary }));
    if (!supports(ref.block)) {
      card.append(el("p", { class: "warning", text: `${ref.block} does not support task ${state.task.type} (it supports: ${spec.tasks.join(", ")}); remove it.` }));
    }
    const fields = el("div", { class: "fields" });
    renderFields(fields, spec.params, ref.params, idBase, update);
    if (!spec.params.length) fields.append(el("p", { class: "muted", text: "No parameters." }));
    const list = state.blocks[kind];
    const move = (delta) => {
      const [item] = list.splice(index, 1);
      list.splice(index + delta, 0, item);
      renderKind(kind);
      update();
      $(`${kind}-${index + delta}-up`)?.focus();
    };
    const buttons = el("div", { class: "card-actions" },
      el("button", { type: "button", class: "secondary", id: `${idBase}-up`, disabled: index === 0, "aria-label": `Move ${ref.block} (${KIND_TITLES[kind]} ${index + 1}) up`, text: "Move up", onclick: () => move(-1) }),
      el("button", { type: "button", class: "secondary", id: `${idBase}-down`, disabled: index === count - 1, "aria-label": `Move ${ref.block} (${KIND_TITLES[kind]} ${index + 1}) down`, text: "Move down", onclick: () => move(1) }),
      el("button", { type: "button", class: "secondary", "aria-label": `Remove ${ref.block} (${KIND_TITLES[kind]} ${index + 1})`, text: "Remove", onclick: () => { list.splice(index, 1); renderKind(kind); update(); } }));
    card.append(fields, buttons);
    return card;
  }

  function renderKind(kind) {
    const box = $(`kind-${kind}`);
    box.replaceChildren(el("legend", { text: KIND_TITLES[kind] || kind }));
    const options = blocksOf(kind).filter((b) => supports(b.name));
    if (catalogue.list_kinds.includes(kind)) {
      const list = state.blocks[kind];
      const cards = el("div", { class: "cards" });
      list.forEach((ref, i) => cards.append(blockCard(kind, ref, i, list.length)));
      if (!list.length) cards.append(el("p", { class: "muted", text: "None yet." }));
      const id = `add-${kind}`;
      const select = el("select", { id });
      for (const b of options) select.append(el("option", { value: b.name, text: `${b.name}: ${b.summary}` }));
      const add = el("button", { type: "button", text: "Add", "aria-label": `Add a ${(KIND_TITLES[kind] || kind).toLowerCase()} block`, onclick: () => {
        const spec = blocksByName[select.value];
        if (!spec) return;
        list.push({ block: spec.name, params: defaultsOf(spec.params) });
        renderKind(kind);
        update();
        $(`add-${kind}`).focus();
      } });
      box.append(cards, el("div", { class: "add-row" },
        el("label", { for: id, text: `${KIND_TITLES[kind] || kind} block to add` }), select, add));
      return;
    }
    const ref = state.blocks[kind];
    const id = `choose-${kind}`;
    const select = el("select", { id });
    for (const b of options) select.append(el("option", { value: b.name, text: `${b.name}: ${b.summary}` }));
    if (!options.length) select.append(el("option", { value: "", text: `(no ${kind} block supports ${state.task.type})` }));
    select.value = ref ? ref.block : "";
    select.addEventListener("change", () => {
      const spec = blocksByName[select.value];
      state.blocks[kind] = spec ? { block: spec.name, params: defaultsOf(spec.params) } : null;
      renderKind(kind);
      update();
      $(`choose-${kind}`).focus();
    });
    box.append(el("div", { class: "field" }, el("label", { for: id, text: `${KIND_TITLES[kind] || kind} block` }), select));
    if (ref && blocksByName[ref.block]) {
      const spec = blocksByName[ref.block];
      const fields = el("div", { class: "fields" });
      renderFields(fields, spec.params, ref.params, kind, update);
      if (!spec.params.length) fields.append(el("p", { class: "muted", text: "No parameters." }));
      box.append(el("div", { class: "block-card single", "data-block": ref.block }, el("p", { class: "muted", text: spec.summary }), fields));
    }
  }

  function renderKinds() {
    for (const kind of catalogue.kinds) renderKind(kind);
  }

  // ------------------------------------------------------------------ YAML

  const RESERVED = /^(true|false|yes|no|on|off|y|n|null|~)$/i;

  function scalar(v) {
    if (v === null || v === undefined) return "null";
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v === "number") {
      if (!Number.isFinite(v)) return JSON.stringify(String(v));
      const s = String(v);
      // YAML 1.1 (PyYAML) reads 1e-05 as a string: write 1.0e-05
      return /e/i.test(s) && !s.includes(".") ? s.replace(/e/i, ".0e") : s;
    }
    const s = String(v);
    return /^[A-Za-z_][A-Za-z0-9_.\-/]*$/.test(s) && !RESERVED.test(s) ? s : JSON.stringify(s);
  }

  const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  function emit(obj, indent, lines) {
    const pad = " ".repeat(indent);
    for (const [k, v] of Object.entries(obj)) {
      if (v === undefined) continue;
      if (Array.isArray(v) && v.some(isPlainObject)) {
        if (!v.length) { lines.push(`${pad}${k}: []`); continue; }
        lines.push(`${pad}${k}:`);
        for (const item of v) {
          const sub = [];
          emit(item, indent + 4, sub);
          if (sub.length) sub[0] = `${pad}  - ${sub[0].trimStart()}`;
          lines.push(...sub);
        }
      } else if (Array.isArray(v)) {
        lines.push(`${pad}${k}: [${v.map(scalar).join(", ")}]`);
      } else if (isPlainObject(v)) {
        if (!Object.keys(v).length) { lines.push(`${pad}${k}: {}`); continue; }
        lines.push(`${pad}${k}:`);
        emit(v, indent + 2, lines);
      } else {
        lines.push(`${pad}${k}: ${scalar(v)}`);
      }
    }
  }

  // Values that differ from their default (and required ones): the YAML stays short.
  function changed(fields, values, always) {
    const out = {};
    for (const f of fields) {
      const v = values[f.name];
      if (v === undefined) continue;
      if (f.required || (always || []).includes(f.name) || !same(v, f.default)) out[f.name] = v;
    }
    return out;
  }

  function blockRef(ref) {
    const spec = blocksByName[ref.block];
    const params = spec ? changed(spec.params, ref.params) : ref.params;
    return Object.keys(params).length ? { block: ref.block, params } : { block: ref.block };
  }

  function recipeObject() {
    const type = state.task.type;
    const d = state.dataset;
    const dataset = { name: d.name, split: d.split, train: d.train, validation: d.validation };
    if ((type === "classification" || type === "regression") && d.target) dataset.target = d.target;
    if (type === "multilabel") dataset.targets = d.targets;
    const out = { name: state.name };
    if (state.description) out.description = state.description;
    Object.assign(out, { dataset, task: changed(catalogue.settings.task, state.task, ["type", "spatial_dims"]) });
    for (const kind of catalogue.kinds) {
      const value = state.blocks[kind];
      if (Array.isArray(value)) { if (value.length) out[kind] = value.map(blockRef); }
      else if (value) out[kind] = blockRef(value);
    }
    out.trainer = changed(catalogue.settings.trainer, state.trainer);
    const exp = changed(catalogue.settings.export, state.export);
    if (Object.keys(exp).length) out.export = exp;
    return out;
  }

  // By hand: the textarea's text is the recipe; the forms are set aside until "Back to the
  // form" (which drops the hand edits: the forms cannot hold every YAML a person writes).
  let byHand = false;

  function setByHand(on) {
    byHand = on;
    const area = $("yaml-text");
    if (on) area.value = formYaml();
    $("yaml-edit").hidden = !on;
    $("edit-yaml").textContent = on ? "Back to the form (drop hand edits)" : "Edit the YAML by hand";
    $("recipe-form").querySelectorAll(":scope > fieldset, #kinds > fieldset").forEach((f) => { f.disabled = on; });
    $("by-hand-note").hidden = !on;
    update();
    if (on) area.focus();
  }

  function yamlText() {
    return byHand ? $("yaml-text").value : formYaml();
  }

  function formYaml() {
    const lines = [];
    emit(recipeObject(), 0, lines);
    return lines.join("\n") + "\n";
  }

  function renderYaml(problems) {
    const list = $("yaml-lines");
    list.replaceChildren();
    const byLine = {};
    for (const p of problems) (byLine[p.line || 1] = byLine[p.line || 1] || []).push(p);
    yamlText().replace(/\n$/, "").split("\n").forEach((line, i) => {
      const item = el("li", { id: `yaml-line-${i + 1}` }, el("code", { text: line || " " }));
      for (const p of byLine[i + 1] || []) {
        item.classList.add("has-problem");
        const note = el("div", { class: "line-problem", role: "note" },
          el("strong", { text: `Line ${i + 1}, ${p.field || "(top level)"}: ` }), p.message);
        if (p.suggestion) note.append(el("span", { class: "suggestion", text: ` Suggestion: ${p.suggestion}` }));
        if (p.suggestion && byHand && typeof p.value === "string" && line.includes(p.value)) {
          note.append(" ", el("button", {
            type: "button", class: "secondary", text: `Use ${p.suggestion}`,
            "aria-label": `Line ${i + 1}: use ${p.suggestion} instead of ${p.value}`,
            onclick: () => useSuggestion(i, p.value, p.suggestion),
          }));
        }
        item.append(note);
      }
      list.append(item);
    });
  }

  // By hand: put the suggested name in place of the wrong one on its line.
  function useSuggestion(index, wrong, right) {
    const area = $("yaml-text");
    const lines = area.value.split("\n");
    lines[index] = lines[index].replace(wrong, right);
    area.value = lines.join("\n");
    update();
    area.focus();
  }

  // Any change: problems shown belong to the old YAML, so they go.
  function update() {
    lastProblems = [];
    $("outcome").replaceChildren();
    $("outcome").className = "";
    renderYaml([]);
  }

  // ------------------------------------------------------------------ validate, launch

  async function post(url, payload) {
    const r = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" },
      body: JSON.stringify(payload),
      credentials: "same-origin",
    });
    let body = {};
    try { body = await r.json(); } catch (e) { body = {}; }
    return { status: r.status, body };
  }

  function showOutcome(kind, text, problems) {
    const out = $("outcome");
    out.className = kind;
    out.replaceChildren(el("p", { text }));
    if (problems && problems.length) {
      const ul = el("ul");
      for (const p of problems) {
        const a = el("a", { href: `#yaml-line-${p.line || 1}`, text: `line ${p.line ?? "?"}` });
        ul.append(el("li", {}, a, `, ${p.field || "(top level)"}: ${p.message}`));
      }
      out.append(ul);
    }
    lastProblems = problems || [];
    renderYaml(lastProblems);
  }

  function detailText(body, status) {
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
    return `the server answered ${status}`;
  }

  async function validate() {
    $("validate").disabled = true;
    try {
      const { status, body } = await post("/api/v1/lab/recipes/validate", { recipe: yamlText() });
      if (status !== 200) showOutcome("error", `Could not validate: ${detailText(body, status)}`);
      else if (body.ok) {
        showOutcome("notice", "Valid: the recipe can be launched.");
        if (byHand && body.data) {
          $("outcome").append(el("button", {
            type: "button", class: "secondary", text: "Load into the form",
            onclick: () => loadRecipe(body.data),
          }));
        }
      }
      else showOutcome("error", `${body.problems.length} problem(s) in the recipe:`, body.problems);
      return status === 200 && body.ok;
    } catch (e) {
      showOutcome("error", `Could not reach the server: ${e}`);
      return false;
    } finally {
      $("validate").disabled = false;
    }
  }

  async function launch() {
    if (!canLaunch) return;
    $("launch").disabled = true;
    try {
      const { status, body } = await post(runsUrl, { recipe: yamlText() });
      if (status === 201 && body.url) {
        showOutcome("notice", "Launched: opening the run…");
        window.location.assign(body.url);
        return;
      }
      if (Array.isArray(body.problems)) showOutcome("error", "The run was refused:", body.problems);
      else showOutcome("error", `The run was refused: ${detailText(body, status)}`);
    } catch (e) {
      showOutcome("error", `Could not reach the server: ${e}`);
    }
    $("launch").disabled = false;
  }

  function download() {
    const blob = new Blob([yamlText()], { type: "application/yaml" });
    const a = el("a", { href: URL.createObjectURL(blob), download: `${state.name || "recipe"}.yaml` });
    document.body.append(a);
    a.click();
    a.remove();
  }

  function renderForms() {
    $("recipe-name").value = state.name;
    $("recipe-description").value = state.description;
    renderData();
    renderTask();
    fitPatch();
    renderFields($("trainer-fields"), catalogue.settings.trainer, state.trainer, "trainer", update);
    renderFields($("export-fields"), catalogue.settings.export, state.export, "export", update);
    renderKinds();
  }

  // A valid recipe (the server's normalised data) into the forms, e.g. one pasted by hand.
  function loadRecipe(data) {
    const withDefaults = (fields, values) => Object.assign(defaultsOf(fields), clone(values || {}));
    const ref = (r) => {
      const spec = blocksByName[r.block];
      return { block: r.block, params: spec ? withDefaults(spec.params, r.params) : clone(r.params || {}) };
    };
    const d = data.dataset;
    state.name = data.name;
    state.description = data.description || "";
    state.dataset = {
      name: d.name, split: d.split, train: d.train, validation: d.validation,
      target: d.target || "", targets: d.targets || [],
    };
    state.task = withDefaults(catalogue.settings.task, data.task);
    for (const kind of catalogue.kinds) {
      const v = data[kind];
      state.blocks[kind] = Array.isArray(v) ? v.map(ref) : v ? ref(v) : null;
    }
    state.trainer = withDefaults(catalogue.settings.trainer, data.trainer);
    state.export = withDefaults(catalogue.settings.export, data.export);
    setByHand(false);
    renderForms();
    update();
    $("recipe-name").focus();
  }

  // ------------------------------------------------------------------ start

  async function getJson(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`${url}: ${r.status}`);
    return r.json();
  }

  async function start() {
    try {
      [catalogue, datasets] = await Promise.all([getJson("/api/v1/lab/blocks"), getJson("/api/v1/lab/datasets")]);
    } catch (e) {
      $("loading").textContent = `Could not load the builder's data (${e.message}); reload the page.`;
      return;
    }
    for (const b of catalogue.blocks) blocksByName[b.name] = b;
    state.task = defaultsOf(catalogue.settings.task);
    const types = catalogue.task_types;
    if (!state.task.type) state.task.type = types[0];
    state.trainer = defaultsOf(catalogue.settings.trainer);
    state.export = defaultsOf(catalogue.settings.export);
    state.dataset.name = datasets[0]?.name || "";
    if (currentDataset()) presetFromImages(currentDataset());
    for (const kind of catalogue.kinds) state.blocks[kind] = catalogue.list_kinds.includes(kind) ? [] : firstBlock(kind);
    const kinds = $("kinds");
    for (const kind of catalogue.kinds) kinds.append(el("fieldset", { id: `kind-${kind}`, class: "kind" }));

    $("recipe-name").addEventListener("input", (e) => { state.name = e.target.value; update(); });
    $("dataset").addEventListener("change", (e) => onDataChange("name", e.target.value));
    $("split").addEventListener("change", (e) => onDataChange("split", e.target.value));
    $("train-subset").addEventListener("change", (e) => onDataChange("train", e.target.value));
    $("validation-subset").addEventListener("change", (e) => onDataChange("validation", e.target.value));
    $("target").addEventListener("change", (e) => onDataChange("target", e.target.value));
    $("validate").addEventListener("click", validate);
    $("launch").addEventListener("click", launch);
    $("download").addEventListener("click", download);
    $("edit-yaml").addEventListener("click", () => setByHand(!byHand));
    $("yaml-text").addEventListener("input", update);

    $("recipe-description").addEventListener("input", (e) => { state.description = e.target.value; update(); });

    renderForms();
    classesFromLabelMaps();
    for (const id of ["data-fs", "task-fs", "trainer-fs", "export-fs"]) $(id).hidden = false;
    $("loading").remove();
    update();
    root.dataset.ready = "true";
  }

  start();
})();
