/** One Server-Sent Events message. */
export interface SseMessage {
  data: string;
  /** The `id:` of the message, when it had one. */
  id?: string;
}

/**
 * An incremental Server-Sent Events parser (the HTML standard's rules, for the fields sessiond
 * sends): feed it text as it arrives, get back the complete messages. `retry` holds the
 * server's last `retry:` in milliseconds.
 */
export class SseParser {
  retry: number | undefined;
  private buffer = '';
  private data: string[] = [];
  private id: string | undefined;

  push(chunk: string): SseMessage[] {
    const messages: SseMessage[] = [];
    this.buffer += chunk;
    for (let end; (end = this.buffer.search(/\r\n|\r|\n/)) >= 0; ) {
      // A lone \r at the end of a chunk may be the first half of \r\n: wait for more.
      if (this.buffer[end] === '\r' && end === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + (this.buffer.startsWith('\r\n', end) ? 2 : 1));
      if (line === '') {
        if (this.data.length) {
          const message: SseMessage = { data: this.data.join('\n') };
          if (this.id !== undefined) message.id = this.id;
          messages.push(message);
        }
        this.data = [];
        this.id = undefined;
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') this.data.push(value);
      else if (field === 'id' && !value.includes('\0')) this.id = value;
      else if (field === 'retry' && /^\d+$/.test(value)) this.retry = Number(value);
    }
    return messages;
  }
}
