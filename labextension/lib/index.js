// holynb-lab: a %%llm cell holds a prompt, not Python, so its editor highlights Markdown.
//
// The notebook sets every code cell's mimeType from the kernel's language; this plugin sets
// the mimeType of cells whose source starts with %%llm to holynb's prompt language and puts the
// notebook's back when the %%llm line goes. The prompt language is JupyterLab's own Markdown
// (IPython's GFM flavour, as Markdown cells use) without link syntax: in a prompt, "[3, 1, 4]"
// is a Python list, not a link. Only the editor's highlighting changes: the cell still runs as
// code in the kernel.
import { Language, LanguageSupport } from '@codemirror/language';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { INotebookTracker } from '@jupyterlab/notebook';

const MARKDOWN = 'ipythongfm';
const PROMPT = 'text/x-holynb-prompt';
const MAGIC = /^\s*%%llm\b/;
// lezer-markdown's parsers of [text](url), ![alt](src) and [label]: url definitions
const NOT_IN_PROMPTS = ['Link', 'Image', 'LinkReference'];

async function promptLanguage(languages) {
  const gfm = await languages.getLanguage(MARKDOWN);
  const support = gfm && gfm.support;
  if (!support) {
    throw new Error('holynb-lab: JupyterLab has no ipythongfm language');
  }
  try {
    const base = support.language;
    const parser = base.parser.configure({ remove: NOT_IN_PROMPTS });
    return new LanguageSupport(new Language(base.data, parser, [], 'holynb-prompt'), support.support);
  } catch (err) {
    console.warn('holynb-lab: %%llm cells use plain Markdown highlighting', err);
    return support; // Markdown with links is still better than Python
  }
}

function isPrompt(model) {
  return model.type === 'code' && MAGIC.test(model.sharedModel.getSource());
}

function follow(cellModel, notebook) {
  if (cellModel.__holynb) {
    return;
  }
  cellModel.__holynb = true;
  const update = () => {
    if (cellModel.type !== 'code') {
      return;
    }
    if (isPrompt(cellModel)) {
      if (cellModel.mimeType !== PROMPT) {
        cellModel.mimeType = PROMPT;
      }
    } else if (cellModel.mimeType === PROMPT && notebook.codeMimetype) {
      cellModel.mimeType = notebook.codeMimetype;
    }
  };
  cellModel.sharedModel.changed.connect(update);
  cellModel.mimeTypeChanged.connect(update); // the notebook resets it when the kernel changes
  update();
}

function watch(panel) {
  const notebook = panel.content;
  const followAll = () => {
    if (notebook.model) {
      for (const cellModel of notebook.model.cells) {
        follow(cellModel, notebook);
      }
    }
  };
  notebook.modelContentChanged.connect(followAll);
  notebook.modelChanged.connect(followAll);
  followAll();
}

const plugin = {
  id: 'holynb-lab:llm-cells-as-markdown',
  description: 'Highlights %%llm cells as Markdown without links.',
  autoStart: true,
  requires: [INotebookTracker, IEditorLanguageRegistry],
  activate: (app, tracker, languages) => {
    languages.addLanguage({
      name: 'holynb-prompt',
      displayName: '%%llm prompt',
      mime: PROMPT,
      load: () => promptLanguage(languages)
    });
    tracker.forEach(watch);
    tracker.widgetAdded.connect((_, panel) => watch(panel));
  }
};

export default plugin;
