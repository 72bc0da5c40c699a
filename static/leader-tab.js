/**
 * leader-tab.js — kept for pages written for it. The leader-tab sharing now
 * lives in the client library (/notify-client.js, built from clients/js):
 * new pages use createNotifyClient({..., share: true}), which also renews
 * tokens and reopens after refusals. subscribeShared() keeps its API:
 *
 *   import { subscribeShared } from '/leader-tab.js';
 *   const sub = subscribeShared(url, (msg) => { ... msg.id, msg.data, msg.type ... });
 *   // sub.isLeader(), sub.lastEventId(), sub.reconnect(), sub.close()
 */
export { subscribeShared } from './notify-client.js';
