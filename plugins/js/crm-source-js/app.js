// crm-source-js: crm-source's pull side in JavaScript, built with
// componentize-js. It reads with the language's own HTTP client, `fetch`,
// which the host serves as wasi:http under the same grants, credentials,
// limits and audit as the `http` capability.
//
// `GET {base_url}/v1/contacts?updated_after=T&after_id=K&limit=N` answers
// `{"contacts": [...], "has_more": bool}` ordered by (updated_at, id); the
// checkpoint is the last (updated_at, id) read.
import { get as getConfig } from "causeway:plugin/config@0.1.0";

const STREAM = "contacts";

function config() {
  const config = JSON.parse(getConfig());
  if (typeof config.base_url !== "string" || !/^https?:\/\//.test(config.base_url)) {
    throw { tag: "config", val: "base_url must be the CRM API's http(s) URL, e.g. https://crm.example.com" };
  }
  return { baseUrl: config.base_url.replace(/\/+$/, ""), pageSize: config.page_size ?? 100 };
}

// Throws the contract's plugin-error for a failed request: the host's
// refusal (a grant missing) and a network failure are worth a retry only
// when the network failed.
async function getJson(url) {
  let response;
  try {
    // The host injects the secret bound to `crm-token`; the plugin never sees it.
    response = await fetch(url, {
      headers: { accept: "application/json", "x-causeway-credential": "crm-token" },
    });
  } catch (e) {
    throw { tag: "transient", val: `GET ${url} failed: ${e}` };
  }
  if (response.status === 401 || response.status === 403) {
    throw { tag: "auth", val: `GET ${url}: status ${response.status}` };
  }
  if (response.status === 429 || response.status >= 500) {
    throw { tag: "transient", val: `GET ${url}: status ${response.status}` };
  }
  if (response.status >= 400) {
    throw { tag: "fatal", val: `GET ${url}: status ${response.status}` };
  }
  return response.json();
}

function idText(id) {
  return typeof id === "string" ? id : JSON.stringify(id);
}

function recordOf(contact) {
  return {
    stream: STREAM,
    key: idText(contact.id),
    op: "upsert",
    data: JSON.stringify(contact),
    sourceTimestamp: BigInt(contact.updated_at),
  };
}

export const source = {
  async check() {
    await getJson(`${config().baseUrl}/v1/contacts?limit=1`);
  },

  discover() {
    return [
      {
        name: STREAM,
        description: "CRM contacts, ordered by last update.",
        incremental: true,
        jsonSchema: undefined,
      },
    ];
  },

  async read(stream, checkpoint) {
    if (stream !== STREAM) {
      throw { tag: "config", val: `unknown stream ${JSON.stringify(stream)}: crm-source-js reads only "contacts"` };
    }
    const { baseUrl, pageSize } = config();
    const cursor = checkpoint === undefined ? { updated_at: 0, id: "" } : JSON.parse(checkpoint);
    const url = `${baseUrl}/v1/contacts?updated_after=${cursor.updated_at}` +
      `&after_id=${encodeURIComponent(cursor.id)}&limit=${pageSize}`;
    const page = await getJson(url);
    const last = page.contacts[page.contacts.length - 1];
    return {
      records: page.contacts.map(recordOf),
      // An empty page keeps the checkpoint it was read from (`none`).
      checkpoint: last === undefined ? undefined : JSON.stringify({ updated_at: last.updated_at, id: idText(last.id) }),
      hasMore: page.has_more,
    };
  },
};
