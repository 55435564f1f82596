// holynb-lab: a %%llm cell holds a prompt, not Python, so its editor highlights Markdown.
//
// The notebook sets every code cell's mimeType from the kernel's language; this plugin sets
// the mimeType of cells whose source starts with %%llm to Markdown (IPython's GFM flavour, as
// Markdown cells use) and puts the notebook's back when the %%llm line goes. Only the editor's
// highlighting changes: the cell still runs as code in the kernel.
import { INotebookTracker } from '@jupyterlab/notebook';

const MARKDOWN = 'text/x-ipythongfm';
const MAGIC = /^\s*%%llm\b/;

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
      if (cellModel.mimeType !== MARKDOWN) {
        cellModel.mimeType = MARKDOWN;
      }
    } else if (cellModel.mimeType === MARKDOWN && notebook.codeMimetype) {
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
  description: 'Highlights %%llm cells as Markdown.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app, tracker) => {
    tracker.forEach(watch);
    tracker.widgetAdded.connect((_, panel) => watch(panel));
  }
};

export default plugin;
