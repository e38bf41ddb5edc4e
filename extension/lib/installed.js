// What `st-imagegen extension install` knew at install time: the daemon's address. This shipped
// copy is empty; the installed copy of this file is rewritten by the install.
export const INSTALLED = Object.freeze({ address: '' });
