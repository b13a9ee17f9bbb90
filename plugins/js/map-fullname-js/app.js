// map-fullname-js: map-fullname in JavaScript, built with componentize-js.
//
// CRM contacts in, mailing-list subscribers out: firstName + lastName become
// fullName; a contact without an email is dropped; deletes pass through with
// the same key. Its output is byte for byte the Rust plugin's.
import { get as getConfig } from "causeway:plugin/config@0.1.0";

function text(value) {
  return typeof value === "string" ? value.trim() : "";
}

function mapContact(contact) {
  const email = text(contact.email);
  if (!email) return null;
  const fullName = [text(contact.firstName), text(contact.lastName)]
    .filter((part) => part.length > 0)
    .join(" ");
  const subscriber = { fullName, email };
  const company = text(contact.company);
  if (company) subscriber.organization = company;
  return subscriber;
}

export const transform = {
  transform(batch) {
    const target = JSON.parse(getConfig()).target_stream || "subscribers";
    const out = [];
    for (const record of batch) {
      if (record.op === "delete") {
        out.push({ ...record, stream: target });
        continue;
      }
      let contact;
      try {
        contact = JSON.parse(record.data);
        if (contact === null || typeof contact !== "object" || Array.isArray(contact)) {
          throw new Error("expected a JSON object");
        }
      } catch (e) {
        // A thrown { tag, val } is the call's plugin-error.
        throw {
          tag: "fatal",
          val: `record ${record.key} in stream ${record.stream}: data does not match the expected shape: ${e}`,
        };
      }
      const subscriber = mapContact(contact);
      if (subscriber) {
        out.push({ ...record, stream: target, op: "upsert", data: JSON.stringify(subscriber) });
      }
    }
    return out;
  },
};
