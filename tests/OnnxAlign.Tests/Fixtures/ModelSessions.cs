using OnnxAlign.Evaluation;
using OnnxAlign.Model;

namespace OnnxAlign.Tests;

/// <summary>
/// The ONNX Runtime sessions of one test class (issue #16, item 7): each model's denoiser, text encoder, VAE decoder
/// or evaluator is opened on first use, handed to every test of the class that asks for it, and disposed when the
/// class is done. A test class takes it as <c>IClassFixture&lt;ModelSessions&gt;</c> and a constructor parameter.
/// </summary>
/// <remarks>
/// <para><b>Per class, not per process.</b> xunit runs the test classes in parallel (each class is its own test
/// collection) but the tests of one class one after another, so a per-class fixture is used by one test at a time.
/// That matters because the sessions' wrappers are not made for concurrent use across tests:
/// <see cref="OnnxDenoiser"/> reuses its I/O bindings and host buffers across calls (it serialises
/// <c>PredictNoise</c> under a lock, but its <c>Dispose</c> is not synchronised with a running call), and
/// <see cref="ImageEvaluator"/> keeps its per-shape networks in an unsynchronised dictionary. A process-wide static
/// cache shared between classes would put tests of classes running in parallel on one instance (the evaluator is then
/// unsafe, and every denoiser call of the whole suite would queue on one lock), would have no point at which it may
/// dispose, and would let one class's broken or disposed session fail another class. A test that itself fans out over
/// threads on one shared denoiser (as <c>ReliabilityTests.ParallelGenerationsEqualSequentialOnes</c> does) relies on
/// the denoiser's lock, which is what that test checks; the fixture's own cache is locked for it too.</para>
/// <para><b>Keys.</b> A session is keyed by its network (and the scheduler config of a denoiser) and by the options
/// that change the session: device, intra-op threads and sample shape (and, for the VAE decoder and the evaluator,
/// the shapes they were opened for). Options with a <see cref="DenoiserOptions.ConfigureSession"/> callback cannot
/// be keyed and are refused: a test of that seam opens its own session.</para>
/// <para><b>What stays a test's own.</b> A test about opening, disposing, options, device or a failing session, a
/// cancel that terminates a running ONNX call, or a network written to a temporary folder opens its own session
/// with <c>using var</c>. Nothing handed out here may be disposed by a test; the fixture does that. Reward networks
/// (<c>OnnxReward</c>) are not cached: they count their evaluations, which tests assert.</para>
/// </remarks>
public sealed class ModelSessions : IDisposable
{
    private readonly Dictionary<string, IDisposable> _open = [];
    private readonly List<IDisposable> _order = [];
    private bool _disposed;

    /// <summary>How many sessions this fixture has opened (each key once).</summary>
    public int Opened { get { lock (_open) return _order.Count; } }

    /// <summary>The denoiser of the model at <paramref name="path"/> (a folder or a <c>.onnx</c> file).</summary>
    public OnnxDenoiser Denoiser(string path, DenoiserOptions? options = null) => Denoiser(DiffusionModel.Locate(path), options);

    /// <summary>The denoiser of <paramref name="model"/> with <paramref name="options"/> (null: the defaults).</summary>
    public OnnxDenoiser Denoiser(DiffusionModel model, DenoiserOptions? options = null) =>
        Get($"denoiser|{Full(model.OnnxPath)}|{Full(model.ConfigPath)}|{Key(options)}", () => model.OpenDenoiser(options));

    /// <summary>The denoiser of the toy model <paramref name="name"/> under <c>models/toy</c>.</summary>
    public OnnxDenoiser Toy(string name, DenoiserOptions? options = null) => Denoiser(TestSupport.Toy(name), options);

    /// <summary>The text encoder (with its tokenizer) of <paramref name="model"/>.</summary>
    public TextEncoder TextEncoder(DiffusionModel model, DenoiserOptions? options = null) =>
        Get($"text-encoder|{Full(model.TextEncoderPath ?? model.Directory)}|{Key(options)}", () => model.OpenTextEncoder(options));

    /// <summary>The VAE decoder of <paramref name="model"/> for latents of <paramref name="latentShape"/>.</summary>
    public VaeDecoder VaeDecoder(DiffusionModel model, IReadOnlyList<int> latentShape, DenoiserOptions? options = null) =>
        Get($"vae-decoder|{Full(model.VaeDecoderPath ?? model.Directory)}|{Shape(latentShape)}|{Key(options)}", () => model.OpenVaeDecoder(latentShape, options));

    /// <summary>The <see cref="ImageEvaluator"/> in <paramref name="directory"/> (its constructor's defaults otherwise).</summary>
    public ImageEvaluator Evaluator(string directory, DenoiserOptions? options = null, IReadOnlyList<int>? sampleShape = null) =>
        Get($"evaluator|{Full(directory)}|{Shape(sampleShape)}|{Key(options)}", () => new ImageEvaluator(directory, options, sampleShape));

    private T Get<T>(string key, Func<T> open) where T : class, IDisposable
    {
        lock (_open)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_open.TryGetValue(key, out var cached)) return (T)cached;
            var opened = open();
            _open[key] = opened;
            _order.Add(opened);
            return opened;
        }
    }

    private static string Full(string path) => Path.GetFullPath(path);

    private static string Shape(IReadOnlyList<int>? shape) => shape is null ? "-" : string.Join("x", shape);

    private static string Key(DenoiserOptions? options)
    {
        options ??= new DenoiserOptions();
        if (options.ConfigureSession is not null)
            throw new ArgumentException("options with ConfigureSession cannot be shared (the callback is not a key); open the session in the test", nameof(options));
        return $"{options.Device}|{options.IntraOpThreads?.ToString() ?? "all"}|{Shape(options.SampleShape)}";
    }

    /// <summary>Disposes every session, last opened first.</summary>
    public void Dispose()
    {
        lock (_open)
        {
            if (_disposed) return;
            _disposed = true;
            for (int i = _order.Count - 1; i >= 0; i--) _order[i].Dispose();
            _order.Clear();
            _open.Clear();
        }
    }
}
