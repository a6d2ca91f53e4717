namespace OnnxAlign.Rewards;

/// <summary>
/// A reward r on samples, with the structure the aligners need to pick an exact algorithm (DESIGN §6): a
/// <see cref="LinearReward"/> (r = ⟨a, x⟩ + b) or a <see cref="FeatureReward"/> (r = f(Ax) with f's curvature and
/// Lipschitz constant declared), or a reward with no declared structure (an <see cref="OnnxReward"/>, or any subclass), which
/// KL alignment serves by the black-box methods of DESIGN §8.
/// </summary>
/// <remarks>A reward that holds a network owns it: dispose rewards (the others hold nothing and ignore it).</remarks>
public abstract class Reward : IDisposable
{
    /// <summary>A reward named <paramref name="name"/> on samples of <paramref name="size"/> values.</summary>
    protected Reward(string name, int size)
    {
        Name = name;
        Size = size;
    }

    /// <summary>The spec it was built from, for reports.</summary>
    public string Name { get; }

    /// <summary>Values per sample (d).</summary>
    public int Size { get; }

    /// <summary>r(x) for one sample.</summary>
    public abstract double Evaluate(ReadOnlySpan<float> x);

    /// <summary>r(x) for one sample held in double precision (the prox stage's iterates).</summary>
    public abstract double Evaluate(ReadOnlySpan<double> x);

    /// <summary>∇r(x) into <paramref name="gradient"/>; returns r(x).</summary>
    public abstract double Gradient(ReadOnlySpan<double> x, Span<double> gradient);

    /// <summary>True when r has no structure the exact algorithms use (neither linear nor f(Ax)): a network, or a user's function.</summary>
    public virtual bool IsBlackBox => true;

    /// <summary>True when <see cref="Gradient"/> is available (a network reward has none).</summary>
    public virtual bool HasGradient => true;

    /// <summary>r of each sample of a batch (a network reward runs it in batches).</summary>
    public virtual double[] EvaluateBatch(ReadOnlySpan<float> samples)
    {
        int n = samples.Length / Size;
        var r = new double[n];
        for (int i = 0; i < n; i++) r[i] = Evaluate(samples.Slice(i * Size, Size));
        return r;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases what the reward holds (a network's session).</summary>
    protected virtual void Dispose(bool disposing) { }
}
