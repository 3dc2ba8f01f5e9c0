// Thunderbird tag definitions for the IMAP keywords ticketgate sets (rules/gem.toml).
// Thunderbird shows a keyword only when a tag is defined for it: with these, each decision
// shows as a named, coloured tag on the mail (message list and message header).
//
// Deploy to every officer's Thunderbird on Debian: copy this file to /etc/thunderbird/pref/
// (Debian's thunderbird reads every *.js there as default preferences), then restart
// Thunderbird. Officers can still rename or recolour a tag; their choice wins.
// For a single profile instead: put the same lines, with user_pref( for pref(, into
// user.js in the profile directory. README: "What an officer sees".
pref("mailnews.tags.$ticket.tag", "Ticket");
pref("mailnews.tags.$ticket.color", "#1A7F37");
pref("mailnews.tags.$ticket.ordinal", "~01");
pref("mailnews.tags.$noticket.tag", "No ticket");
pref("mailnews.tags.$noticket.color", "#C92A2A");
pref("mailnews.tags.$noticket.ordinal", "~02");
pref("mailnews.tags.$redirected.tag", "Sent to helpdesk");
pref("mailnews.tags.$redirected.color", "#E67700");
pref("mailnews.tags.$redirected.ordinal", "~03");
pref("mailnews.tags.$broadcast.tag", "Broadcast");
pref("mailnews.tags.$broadcast.color", "#D9480F");
pref("mailnews.tags.$broadcast.ordinal", "~04");
pref("mailnews.tags.$duplicate.tag", "Copy (other desk acts)");
pref("mailnews.tags.$duplicate.color", "#868E96");
pref("mailnews.tags.$duplicate.ordinal", "~05");
pref("mailnews.tags.$misrouted.tag", "Misrouted");
pref("mailnews.tags.$misrouted.color", "#AE3EC9");
pref("mailnews.tags.$misrouted.ordinal", "~06");
pref("mailnews.tags.$automatic.tag", "Automatic");
pref("mailnews.tags.$automatic.color", "#6741D9");
pref("mailnews.tags.$automatic.ordinal", "~07");
pref("mailnews.tags.$own.tag", "Own mail");
pref("mailnews.tags.$own.color", "#1C7ED6");
pref("mailnews.tags.$own.ordinal", "~08");
pref("mailnews.tags.$flood.tag", "Flood");
pref("mailnews.tags.$flood.color", "#F03E3E");
pref("mailnews.tags.$flood.ordinal", "~09");
pref("mailnews.tags.$oversized.tag", "Too large to read");
pref("mailnews.tags.$oversized.color", "#495057");
pref("mailnews.tags.$oversized.ordinal", "~10");
pref("mailnews.tags.$unreadable.tag", "Unreadable");
pref("mailnews.tags.$unreadable.color", "#5C5F66");
pref("mailnews.tags.$unreadable.ordinal", "~11");
pref("mailnews.tags.$overdue.tag", "Overdue (48 h)");
pref("mailnews.tags.$overdue.color", "#E03131");
pref("mailnews.tags.$overdue.ordinal", "~19");
pref("mailnews.tags.$tooearly.tag", "Ticket too early");
pref("mailnews.tags.$tooearly.color", "#E67700");
pref("mailnews.tags.$tooearly.ordinal", "~20");
pref("mailnews.tags.$unknownticket.tag", "Ticket not found");
pref("mailnews.tags.$unknownticket.color", "#C92A2A");
pref("mailnews.tags.$unknownticket.ordinal", "~21");
pref("mailnews.tags.$notrequester.tag", "Not the ticket's requester");
pref("mailnews.tags.$notrequester.color", "#AE3EC9");
pref("mailnews.tags.$notrequester.ordinal", "~22");
pref("mailnews.tags.$registryunavailable.tag", "Registry unavailable");
pref("mailnews.tags.$registryunavailable.color", "#868E96");
pref("mailnews.tags.$registryunavailable.ordinal", "~23");
pref("mailnews.tags.$suggested-buyer-registration.tag", "Fits buyer-registration");
pref("mailnews.tags.$suggested-buyer-registration.color", "#0B7285");
pref("mailnews.tags.$suggested-seller-registration.tag", "Fits seller-registration");
pref("mailnews.tags.$suggested-seller-registration.color", "#0B7285");
pref("mailnews.tags.$suggested-product-upload.tag", "Fits product-upload");
pref("mailnews.tags.$suggested-product-upload.color", "#0B7285");
pref("mailnews.tags.$suggested-direct-purchase.tag", "Fits direct-purchase");
pref("mailnews.tags.$suggested-direct-purchase.color", "#0B7285");
pref("mailnews.tags.$suggested-bid-ra.tag", "Fits bid-ra");
pref("mailnews.tags.$suggested-bid-ra.color", "#0B7285");
pref("mailnews.tags.$suggested-order-process.tag", "Fits order-process");
pref("mailnews.tags.$suggested-order-process.color", "#0B7285");
pref("mailnews.tags.$suggested-payment-process.tag", "Fits payment-process");
pref("mailnews.tags.$suggested-payment-process.color", "#0B7285");
