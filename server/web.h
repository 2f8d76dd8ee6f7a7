/*
 * web: the built-in chat page served at GET / (server/web/index.html, embedded at build time
 * by server/web/embed.cmake). Plain HTML/CSS/JS, no external assets; it talks to the public
 * OpenAI API like any other client.
 */
#ifndef VLM_WEB_H
#define VLM_WEB_H

extern const unsigned char web_index_html[];  /* (web_index_html_len + 1), NUL-terminated */
extern const unsigned long web_index_html_len;

#endif
