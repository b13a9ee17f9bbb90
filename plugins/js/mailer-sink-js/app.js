// mailer-sink-js: mailer-sink in JavaScript, built with componentize-js. It
// writes with the language's own HTTP client, `fetch` with a request body,
// which the host serves as wasi:http under the same grants, credentials,
// limits and audit as the `http` capability.
//
// One request per batch: `POST {base_url}/v1/lists/{list_id}/subscribers/batch`
// with `{"operations": [{"op": "upsert", "key", "subscriber"} | {"op":
// "delete", "key"}]}`; the API answers one result per operation,
// `{"status": "ok" | "retry" | "rejected", "reason"?}`.
import { get as getConfig } from "causeway:plugin/config@0.1.0";

function config() {
  const config = JSON.parse(getConfig());
  if (typeof config.base_url !== "string" || !/^https?:\/\//.test(config.base_url)) {
    throw { tag: "config", val: "base_url must be the mailer API's http(s) URL, e.g. https://api.mailer.example" };
  }
  if (typeof config.list_id !== "string") {
    throw { tag: "config", val: "list_id must be the mailing list's id" };
  }
  return `${config.base_url.replace(/\/+$/, "")}/v1/lists/${config.list_id}/subscribers/batch`;
}

// POSTs `body` as JSON and answers the parsed answer, or throws the
// contract's plugin-error.
async function postJson(url, body) {
  let response;
  try {
    // The host injects the secret bound to `mailer-key`; the plugin never sees it.
    response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-causeway-credential": "mailer-key" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw { tag: "transient", val: `POST ${url} failed: ${e}` };
  }
  if (response.status === 401 || response.status === 403) {
    throw { tag: "auth", val: `POST ${url}: status ${response.status}` };
  }
  if (response.status === 429 || response.status >= 500) {
    throw { tag: "transient", val: `POST ${url}: status ${response.status}` };
  }
  if (response.status >= 400) {
    throw { tag: "fatal", val: `POST ${url}: status ${response.status}` };
  }
  return response.json();
}

function operationOf(record) {
  if (record.op === "delete") {
    return { op: "delete", key: record.key };
  }
  let subscriber;
  try {
    subscriber = JSON.parse(record.data);
  } catch (e) {
    throw { tag: "fatal", val: `record ${record.key}: data is not JSON: ${e}` };
  }
  return { op: "upsert", key: record.key, subscriber };
}

export const sink = {
  async check() {
    await postJson(config(), { operations: [] });
  },

  async write(batch) {
    const answer = await postJson(config(), { operations: batch.map(operationOf) });
    if (!Array.isArray(answer.results) || answer.results.length !== batch.length) {
      throw { tag: "transient", val: `the mailer answered ${answer.results?.length} results for ${batch.length} operations` };
    }
    return answer.results.map((r) => {
      const reason = r.reason ?? "";
      if (r.status === "ok") return { tag: "ok" };
      if (r.status === "rejected") return { tag: "rejected", val: reason };
      return { tag: "retry", val: reason };
    });
  },
};
