// Reading the archive through DICOMweb only, as any external viewer would. Light on
// purpose: the page's entry imports it to start the first reads before the viewer's
// bundle has loaded.

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function getJSON(url) {
  const response = await fetch(url, {
    headers: { Accept: 'application/dicom+json' },
    credentials: 'same-origin',
  });
  if (response.status === 204) return [];
  if (!response.ok) {
    const text = (await response.text()).slice(0, 300);
    throw new HttpError(response.status, `${response.status} ${text || response.statusText}`);
  }
  return response.json();
}

/** First value of a DICOM JSON attribute ("00200013" style tag). */
export function value(dataset, tag) {
  const element = dataset?.[tag];
  const first = element?.Value?.[0];
  if (first && typeof first === 'object' && 'Alphabetic' in first) return first.Alphabetic;
  return first;
}

export function values(dataset, tag) {
  return dataset?.[tag]?.Value ?? [];
}

/** DICOM PN "Family^Given^Middle" as "FAMILY, Given Middle". */
export function personName(pn) {
  if (!pn) return '';
  const [family = '', given = '', middle = ''] = pn.split('=')[0].split('^');
  const rest = [given, middle].filter(Boolean).join(' ');
  return rest ? `${family.toUpperCase()}, ${rest}` : family.toUpperCase();
}

export function formatDate(da) {
  return da && da.length === 8 ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : da || '';
}

export class Archive {
  constructor(root) {
    this.root = root.replace(/\/$/, '');
    // imageId -> where it comes from, for annotations and overlays.
    this.imageRefs = new Map();
    // The image loader's metadata registry, set once the viewer's bundle has loaded.
    this.metaDataManager = null;
    this.requests = new Map();
  }

  /** One request per URL: the entry starts them early, the viewer picks them up. */
  once(url) {
    if (!this.requests.has(url)) this.requests.set(url, getJSON(url));
    return this.requests.get(url);
  }

  seriesUrl(studyUID, seriesUID) {
    return `${this.root}/studies/${studyUID}/series/${seriesUID}`;
  }

  thumbnailUrl(studyUID, seriesUID) {
    return `${this.seriesUrl(studyUID, seriesUID)}/thumbnail?viewport=128,128`;
  }

  /** The study's series, in series-number order. */
  async series(studyUID) {
    const found = await this.once(
      `${this.root}/studies/${studyUID}/series?includefield=0008103E&includefield=00180015`,
    );
    return found
      .map((ds) => ({
        studyUID,
        uid: value(ds, '0020000E'),
        number: value(ds, '00200011') ?? null,
        modality: value(ds, '00080060') || '',
        description: value(ds, '0008103E') || '',
        bodyPart: value(ds, '00180015') || '',
        count: Number(value(ds, '00201209') ?? 0),
      }))
      .sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));
  }

  /**
   * One imageId per frame of the series, in display order, with each instance's metadata
   * registered for the image loader: one /metadata request, no per-instance round trips.
   */
  async imageIds(studyUID, seriesUID) {
    const instances = [...(await this.metadata(studyUID, seriesUID))];
    instances.sort(compareInstances);
    const imageIds = [];
    for (const instance of instances) {
      const sopUID = value(instance, '00080018');
      const frames = Number(value(instance, '00280008') ?? 1) || 1;
      const base = `wadors:${this.seriesUrl(studyUID, seriesUID)}/instances/${sopUID}/frames/`;
      for (let frame = 1; frame <= frames; frame += 1) {
        const imageId = `${base}${frame}`;
        this.metaDataManager.add(imageId, instance);
        this.imageRefs.set(imageId, {
          studyUID,
          seriesUID,
          sopUID,
          frame,
          frames,
          instance,
        });
        imageIds.push(imageId);
      }
    }
    return imageIds;
  }

  metadata(studyUID, seriesUID) {
    return this.once(`${this.seriesUrl(studyUID, seriesUID)}/metadata`);
  }

  imageIdFor(studyUID, seriesUID, sopUID, frame) {
    return `wadors:${this.seriesUrl(studyUID, seriesUID)}/instances/${sopUID}/frames/${frame || 1}`;
  }
}

/** The series a study opens on: the first, in series-number order, that has images. */
export function firstSeries(seriesList) {
  return seriesList.find((item) => item.count > 0) ?? seriesList[0];
}

/** Instance number first; slices without one by position along the normal. */
function compareInstances(a, b) {
  const na = Number(value(a, '00200013'));
  const nb = Number(value(b, '00200013'));
  if (Number.isFinite(na) && Number.isFinite(nb) && na !== nb) return na - nb;
  const pa = values(a, '00200032');
  const pb = values(b, '00200032');
  if (pa.length === 3 && pb.length === 3) return pa[2] - pb[2];
  return 0;
}
